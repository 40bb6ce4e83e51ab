"""A drift report of recorded predictions against a run's training baseline: the comparison, its
plot and its table, for any solution that records predictions (the support prediction log, the
finance monitor's scores).

`stats` is what a solution read from its records: {"n", "confidence": [top-class confidence],
"labels": {label: count}, "fallback_rate", "out_of_scope_rate"} (the rates may be None), and for a
multi-label model "set_confidence" (its accuracy estimate's score; None for rows logged without it). Records
keep no embeddings (too big per prediction), so these reports have no embedding drift (domain
AUC, MMD); a live service computes those on its in-memory window (core.evaluation.drift.DriftWindow).
`accuracy_lines` is the markdown paragraph on the accuracy estimated without labels (ATC and DoC
from the baseline's fit, core.evaluation.accuracy_estimate) both solutions' reports print; `plot`
marks the ATC threshold on the confidence histogram.
Leaves out: reading the records (the solutions) and the metric maths (core.evaluation.drift).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.evaluation.accuracy_estimate import NOT_AVAILABLE, SCORE, SET_SCORE
from core.evaluation.drift import drift_report

MIN_ROWS = 200  # under this many predictions the scores are mostly sampling noise (as DriftWindow's min_rows)
TOP_LABELS = 12


def compare(baseline, stats: dict, thresholds) -> dict:
    """core.evaluation.drift.drift_report of logged `stats` (PredictionLog.window_stats) against `baseline`,
    without embeddings; counts only when the run has no baseline."""
    if baseline is None:
        return {"n": stats["n"], "fallback_rate": stats["fallback_rate"], "out_of_scope_rate": stats["out_of_scope_rate"],
                "psi_confidence": None, "label_shift": None, "alerts": [], "drifted": None,
                "accuracy_estimate": {"estimate": None, "method": None, "rows": stats["n"], "alert": False,
                                      "status": f"{NOT_AVAILABLE}: the run has no drift baseline"}}
    # a multi-label baseline's label shares are over predicted label sets; the log keeps one label a row
    labels = {} if baseline.multi_label else stats["labels"]
    out = drift_report(baseline, embeddings=None, confidence=stats["confidence"], labels=labels,
                       fallback_rate=stats["fallback_rate"], out_of_scope_rate=stats["out_of_scope_rate"],
                       thresholds=thresholds, set_confidence=stats.get("set_confidence"))
    if not labels and baseline.multi_label:
        out["label_shift_note"] = ("not measured: the prediction log keeps each prediction's primary label only, "
                                   "the multi-label baseline every predicted label (the live monitor measures it)")
    return out


def label_rows(baseline_share: dict, recent: dict[str, int]) -> list[tuple[str, float, float]]:
    total = max(sum(recent.values()), 1)
    shares = {k: v / total for k, v in recent.items()}
    names = sorted(set(baseline_share) | set(shares), key=lambda k: -max(baseline_share.get(k, 0), shares.get(k, 0)))
    rows = [(k, float(baseline_share.get(k, 0)), shares.get(k, 0.0)) for k in names[:TOP_LABELS]]
    rest = names[TOP_LABELS:]
    if rest:
        rows.append((f"({len(rest)} others)", float(sum(baseline_share.get(k, 0) for k in rest)),
                     sum(shares.get(k, 0) for k in rest)))
    return rows


def plot(baseline, stats: dict, version: str, path: Path, recent: str = "logged traffic") -> Path:
    """Confidence distributions and the predicted-label mix, baseline vs `recent`."""
    import matplotlib  # lazy: matplotlib only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib only when a plot is drawn

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    bins = np.linspace(0, 1, 21)
    if baseline is not None:
        left.hist(np.asarray(baseline.confidence), bins=bins, density=True, histtype="step", linewidth=2,
                  label=f"baseline (validation, n={len(baseline.confidence)})")
    left.hist(np.asarray(stats["confidence"]), bins=bins, density=True, histtype="step", linewidth=2,
              label=f"{recent} (n={stats['n']})")
    fit = getattr(baseline, "accuracy", None)
    if fit is not None and fit.score == SCORE:  # a multi-label fit thresholds the set probability, not this axis
        left.axvline(fit.threshold, color="grey", linestyle="--", linewidth=1,
                     label=f"ATC threshold {fit.threshold:.3f} (validation accuracy {fit.validation_accuracy:.3f})")
    left.set(xlabel="top-class confidence (calibrated)", ylabel="density", title="confidence distribution")
    left.legend(loc="upper left", fontsize=8)
    rows = label_rows(dict(baseline.label_share) if baseline is not None else {}, stats["labels"])
    y = np.arange(len(rows))
    right.barh(y - 0.2, [r[1] for r in rows], height=0.4, label="baseline")
    right.barh(y + 0.2, [r[2] for r in rows], height=0.4, label=recent)
    right.set_yticks(y, [r[0][:28] for r in rows], fontsize=8)
    right.invert_yaxis()
    right.set(xlabel="share of predictions", title="predicted-label mix")
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"drift of model {version}: baseline vs {recent}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def accuracy_lines(result: dict, what: str = "predictions") -> list[str]:
    """Markdown lines on the accuracy estimated without labels (`result["accuracy_estimate"]`)."""
    est = result.get("accuracy_estimate") or {"status": f"{NOT_AVAILABLE}: no estimate in this result"}
    if est.get("estimate") is None:
        return [f"**Accuracy estimated without labels: {est['status']}.**", ""]
    verdict = (f"**alert: {100 * est['drop']:.1f} points below the validation accuracy (margin "
               f"{100 * est['max_drop']:.0f})**" if est["alert"] else
               f"no alert (drop {100 * est['drop']:.1f} points, margin {100 * est['max_drop']:.0f})")
    return ["## Accuracy estimated without labels", "",
            "| estimate | method | over | validation accuracy | alert |", "|---|---|---|---|---|",
            f"| {est['estimate']:.3f} | {est['method']} | {est['rows']} {what} | {est['validation_accuracy']:.3f} | "
            f"{'**yes**' if est['alert'] else 'no'} |",
            f"| {est['doc_estimate']:.3f} | DoC (average confidence) | {est['rows']} {what} | "
            f"{est['validation_accuracy']:.3f} | - |", "",
            f"Verdict: {verdict}. ATC counts the {what} whose {_score_words(est)} is at least "
            f"{est['threshold']:.3f}, the threshold below which the validation split's share of rows equals its "
            f"error rate ({est['fitted_from']}). It assumes today's errors look like validation's (less sure where "
            f"wrong); it misses errors the model is confident about, e.g. new classes that look like known ones.", ""]


def _score_words(est: dict) -> str:
    return ("calibrated predicted-set probability (every label right)" if SET_SCORE in str(est.get("method"))
            else "calibrated confidence")
