"""`verticals finance drift DB --run RUN`: is the sentiment model still scoring the stream the way it
scored its validation data?

Reads the monitor database's scores (one row per document: the three calibrated probabilities, the
label, and `scores.model`, the version that scored it) of one model version, optionally only
documents of the last `since_hours` of stream time, and compares them with the run's training
baseline (core.evaluation.drift_baseline.DriftBaseline) through core.evaluation.drift_report: PSI of the top-class confidence and
the label shift of the predicted-sentiment mix, and the accuracy estimated without labels (ATC over
the documents' top-class probability, from the run's stored fit; alert when it is more than
DriftThresholds.accuracy_drop below the validation accuracy), against
core.evaluation.drift.DriftThresholds. The monitor
hands nothing over, so there is no fallback rate; it keeps no embeddings, so no embedding drift.
Writes drift.md, drift.json and drift.png. Read-only: the monitor is never blocked (WAL).
Leaves out: the metric maths (core.evaluation.drift) and the comparison/plot (core.evaluation.drift_report).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from core.evaluation.drift import DriftThresholds
from core.evaluation.drift_baseline import load_drift_baseline
from core.evaluation.drift_report import MIN_ROWS, accuracy_lines, compare, fmt, plot
from core.foundation.errors import UserError


def score_stats(db: Path, *, model_version: str | None = None, since_hours: float | None = None) -> tuple[str, dict]:
    """(version, stats) of the documents scored by `model_version` (default: the version that scored
    the most documents); `since_hours`: only documents within that many hours of the newest one."""
    db = Path(db)
    if not db.is_file():
        raise UserError(f"{db} does not exist; give the --db of `verticals finance monitor`")
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise UserError(f"cannot open {db}: {exc}") from None
    try:
        try:
            versions = dict(con.execute("SELECT COALESCE(model, 'unknown'), COUNT(*) FROM scores GROUP BY 1"))
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{db} is not a finance monitor database ({exc})") from None
        if not versions:
            raise UserError(f"{db} holds no scored documents yet")
        version = model_version or max(versions, key=versions.get)
        if version not in versions:
            raise UserError(f"no documents scored by model {version}; the database holds "
                            + ", ".join(f"{v} ({n})" for v, n in versions.items()) + ": pass --model-version")
        since = -float("inf")
        if since_hours is not None:
            newest = con.execute("SELECT MAX(ts) FROM documents").fetchone()[0]
            since = newest - since_hours * 3600
        rows = con.execute("SELECT s.p_negative, s.p_neutral, s.p_positive, s.label FROM scores s JOIN documents d "
                           "ON d.id = s.doc_id WHERE COALESCE(s.model, 'unknown') = ? AND d.ts >= ?",
                           (version, since)).fetchall()
    finally:
        con.close()
    labels: dict[str, int] = {}
    for *_, label in rows:
        labels[label] = labels.get(label, 0) + 1
    return version, {"n": len(rows), "confidence": [max(r[:3]) for r in rows], "labels": labels,
                     "fallback_rate": None, "out_of_scope_rate": None}


def write_monitor_drift(db: Path, run: Path, out: Path | None = None, *, model_version: str | None = None,
                        since_hours: float | None = None, thresholds: DriftThresholds = DriftThresholds()) -> dict:
    """drift.md / drift.json / drift.png in `out` (default: drift-<version>/ beside `db`); returns the result.
    `thresholds`: the alert levels (e.g. DriftThresholds(accuracy_drop=0.03))."""
    version, stats = score_stats(db, model_version=model_version, since_hours=since_hours)
    if stats["n"] == 0:
        raise UserError(f"no documents of model {version} in the last {since_hours} hours of the stream")
    baseline = load_drift_baseline(run)
    result = compare(baseline, stats, thresholds) | {"model_version": version, "run": str(run),
                                                    "since_hours": since_hours}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)[:80]
    out = Path(out) if out else Path(db).resolve().parent / f"drift-{safe}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(json.dumps(result, indent=2))
    plot(baseline, stats, version, out / "drift.png", recent="monitored stream")
    lines = [f"# Sentiment drift: model {version}", "",
             f"Monitor database `{Path(db).name}`: {stats['n']} documents scored by `{version}`"
             + (f" in the last {since_hours:g} h of the stream" if since_hours is not None else "")
             + f", compared with the validation baseline of run `{Path(run).name}`"
             + ("" if baseline is not None else " (none: trained before drift baselines were saved)") + ".", ""]
    if stats["n"] < MIN_ROWS:
        lines += [f"**Only {stats['n']} documents: under {MIN_ROWS} these scores are mostly sampling noise.**", ""]
    lines += ["| measure | stream | alert above | alert |", "|---|---|---|---|"]
    for key, limit in (("psi_confidence", thresholds.psi_confidence), ("label_shift", thresholds.label_shift)):
        lines.append(f"| {key} | {fmt(result.get(key))} | {limit} | {'**yes**' if key in result['alerts'] else 'no'} |")
    lines += ["", *accuracy_lines(result, "documents"), "![confidence and sentiment mix](drift.png)", "",
              "The monitor keeps no embeddings and hands nothing over, so this report has no embedding drift and "
              "no fallback rate. Label the documents it got wrong in `verticals finance dashboard`, then "
              "`verticals retrain RUN --feedback DB`.", ""]
    (out / "drift.md").write_text("\n".join(lines))
    return result | {"out": str(out)}
