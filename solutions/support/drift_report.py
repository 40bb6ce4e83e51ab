"""`verticals support drift DB --run RUN`: a drift report of logged traffic against a run's baseline.

Reads the prediction log (core.mlops.feedback.PredictionLog.window_stats) of one model version and
compares it with the run's training baseline (core.evaluation.drift_baseline.DriftBaseline, from its validation split):
PSI of the top-class confidence, label shift (total variation of the predicted-label mix) and the
fallback rate's increase, and the accuracy estimated without labels (ATC from the run's stored fit,
alert when it is more than DriftThresholds.accuracy_drop below the validation accuracy), against
core.evaluation.drift.DriftThresholds. Writes drift.md, drift.json and
drift.png (confidence distributions and label mix, baseline vs logged traffic).
The log keeps no embeddings (too big per request), so this report has no embedding drift (domain
AUC, MMD): the running service computes those on its in-memory window (GET /v1/drift, /metrics).
Leaves out: the live monitor (solutions.support.monitoring) and the metric maths (core.evaluation.drift).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.evaluation.drift import DriftThresholds
from core.evaluation.drift_report import MIN_ROWS, accuracy_lines, compare, fmt, plot
from core.foundation.errors import UserError
from core.mlops.prediction_logs import is_database_url, open_prediction_log, reader_options, shown
from solutions.support.deployment import load_baseline
from solutions.support.deployment import model_version as version_of  # the report's parameter takes the name
from solutions.support.router import RouterSettings

ROWS = (("psi_confidence", "psi_confidence", "psi_confidence"), ("label_shift", "label_shift", "label_shift"),
        ("fallback rate", "fallback_rate", "fallback_rate_increase"),
        ("out-of-scope rate", "out_of_scope_rate", "out_of_scope_rate_increase"))


def markdown(result: dict, version: str, run: Path, db: str, thresholds, baseline) -> str:
    lines = [f"# Drift report: model {version}", "",
             f"Prediction log `{db}`: {result['n']} logged predictions of model `{version}`, compared with the "
             f"validation baseline of run `{run.name}`" + ("" if baseline is not None else " (none: the run was trained "
                                                          "before drift baselines were saved; counts only)") + ".", "",
             "| measure | logged traffic | baseline | alert above | alert |", "|---|---|---|---|---|"]
    if result["n"] < MIN_ROWS:
        lines[4:4] = [f"**Only {result['n']} predictions: under {MIN_ROWS} these scores are mostly sampling noise "
                      f"(the live monitor waits for {MIN_ROWS}).**", ""]
    for shown, key, limit in ROWS:
        base = result.get(f"{key}_baseline")
        above = getattr(thresholds, limit)
        lines.append(f"| {shown} | {fmt(result.get(key))} | {fmt(base) if key.endswith('rate') else '-'} | "
                     f"{'+' if key.endswith('rate') else ''}{above} | {'**yes**' if key in result['alerts'] else 'no'} |")
    lines += ["", *accuracy_lines(result, "logged predictions"), "![confidence and label mix](drift.png)", "",
              "The prediction log keeps no embeddings, so this report has no embedding drift (domain-classifier AUC, "
              "MMD): the running service computes those on its recent window (`GET /v1/drift`, `/metrics`). "
              "The baseline's fallback rate is what a router with the given --min-confidence / --min-margin would "
              "have handed over on the validation rows.", ""]
    return "\n".join(lines)


def write_drift_report(db: str | Path, run: Path, out: Path | None = None, *, model_version: str | None = None,
                       since_hours: float | None = None, settings=None,
                       thresholds: DriftThresholds = DriftThresholds()) -> dict:
    """Write drift.md / drift.json / drift.png into `out` (default: drift-<version>/ beside `db`, or
    in the working directory for a postgresql:// log); returns the result with the paths. `settings`: the RouterSettings the service ran with (default
    RouterSettings()), for the baseline's fallback rate; `thresholds`: the alert levels."""
    version = model_version or version_of(run)
    since = None if since_hours is None else time.time() - since_hours * 3600
    # open without retention limits: a report must not prune what the service keeps
    with open_prediction_log(db, must_exist=True, **reader_options()) as prediction_log:
        stats = prediction_log.window_stats(model_version=version, since=since)
        if stats["n"] == 0:
            logged = prediction_log.model_versions()
            raise UserError(f"no logged predictions of model {version}{' in that window' if since else ''}; the log holds "
                            f"{', '.join(f'{v} ({n})' for v, n in logged.items()) or 'none'}: pass --model-version")
    baseline = load_baseline(run, settings or RouterSettings())
    result = compare(baseline, stats, thresholds) | {"model_version": version, "run": str(run), "since": since}
    beside = Path.cwd() if is_database_url(db) else Path(db).resolve().parent
    out = Path(out) if out else beside / f"drift-{version}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(json.dumps(result, indent=2))
    plot(baseline, stats, version, out / "drift.png")
    named = shown(db) if is_database_url(db) else Path(db).name
    (out / "drift.md").write_text(markdown(result, version, Path(run), named, thresholds, baseline))
    return result | {"out": str(out)}
