"""After training, on the main process: confidence, the saved model, its evaluation and the report.

`finish(run, data, model, result, cost)`: temperature scaling and the out-of-scope scorer fitted on
validation (`fit_confidence`), the model saved with its drift baseline (from the same validation
outputs), the test-split evaluation and plots (core.classify.scoring.evaluate_trained), the loss
curve, the precision the run computed in (report `precision`, cost ledger `precision`), and the
report through the run's scaffold (core.runs.scaffold.RecipeRun); the checkpoint is dropped once
the model is saved. Every classification mode and safe retraining end here.
Leaves out: training (core.classify.recipes) and metric maths (core.evaluation, core.confidence).
"""

from __future__ import annotations

import shutil

import numpy as np

from core.classify.report import CLASSIFICATION_REPORT
from core.classify.run_data import RunData
from core.classify.scoring import evaluate_trained
from core.confidence.calibrate import fit_temperature
from core.confidence.ood import SCORERS, OutOfScopeDetector
from core.data.catalog import source_fingerprint
from core.data.splits import LabelMap
from core.engine.metrics_log import MetricsLog
from core.evaluation.drift_baseline import save_drift_baseline
from core.evaluation.metrics import plot_loss_curve
from core.foundation.cost import Cost
from core.foundation.precision import precision_section
from core.runs.scaffold import RecipeRun


def finish(run: RecipeRun, data: RunData, model, result, cost: Cost, sections: dict | None = None) -> dict:
    """Main process: calibrate and fit the OOS scorer on validation, save the model and its drift
    baseline (core.evaluation.drift_baseline.DriftBaseline, from the same validation outputs), evaluate, plot,
    write the report, drop the checkpoint, and return the report. Other processes wait for it and
    return only which process they were."""
    if not run.is_main:
        return run.wait_for_main()
    cfg, run_dir, device = run.cfg, run.run_dir, run.device
    cost.trainable_params, cost.total_params = model.trainable_parameters(), model.total_parameters()
    cost.train_samples, cost.tokens_seen = result.samples_seen, result.tokens_seen
    bank = data.train if data.scorer_bank is None else data.scorer_bank
    outputs = model.predict_all(data.data.validation.texts, device=device)  # calibration and the drift baseline
    confidence = fit_confidence(model, bank, data.data.validation, cfg, device, outputs=outputs)
    model.save(run_dir / "model")  # each model writes its own layout (TextClassifier, StaticClassifier)
    y_val = np.asarray(LabelMap(model.labels).encode(data.data.validation.labels))  # the accuracy estimator's fit
    drift = save_drift_baseline(model, *outputs, run_dir / "model", model_version=run_dir.name, seed=cfg.train.seed,
                                labels=y_val)
    splits, train = data.data, data.train
    fingerprint = source_fingerprint(cfg.data.source)  # lets `verticals eval --data COPY` know its own data
    report = {"data": splits.summary() | ({"train_used": len(train)} if len(train) != len(splits.train) else {})
              | ({"out_of_scope_rows_set_aside": data.set_aside} if data.set_aside else {})
              | ({"source_sha256": fingerprint} if fingerprint else {}),
              "data_card": {k: (splits.card or {}).get(k) for k in ("name", "license", "citation", "url")},
              **evaluate_trained(model, splits, confidence, run_dir, device, validation_logits=outputs[0]),
              "drift_baseline": drift,
              "fit": fit_section(result, cfg.train.metric),
              **(sections or {})}
    return write_run_report(run, report, model=model, cost=cost, result=result,
                            rows=(len(train), len(splits.validation)), renderer=CLASSIFICATION_REPORT)


def fit_section(result, metric: str) -> dict:
    """The report's `fit` section: steps, the best step and its validation metric, early stopping, time."""
    return {"steps": result.steps, "best_step": result.best_step, "best_metric": result.best_metric,
            "metric": metric, "stopped_early": result.stopped_early, "train_seconds": round(result.train_seconds, 2)}


def write_run_report(run: RecipeRun, report: dict, *, model, cost: Cost, result, rows: tuple[int, int],
                     renderer) -> dict:
    """The loss curve (when there were steps; `rows`: training and validation rows), the precision
    `model` computes in on the run's device (its `mixed_precision` and `precision_on`: a transformer
    classifier holds train.mixed_precision, a static model float32 whatever the recipe says; the
    report's `precision` section and the cost ledger's `precision`: training, calibration and
    evaluation all computed in it), the report through `renderer`, and the checkpoint dropped (the
    model is saved: free the space). Returns the report."""
    precision = precision_section(model.mixed_precision, run.device, resolved=model.precision_on(run.device))
    cost.precision = precision["resolved"]
    report = {**report, "precision": precision}
    if result.steps:
        plot_loss_curve(MetricsLog.read(run.run_dir / "metrics.jsonl"), run.run_dir / "loss_curve.png",
                        metric=run.cfg.train.metric, train_rows=rows[0], validation_rows=rows[1])
    report = run.write_report(report, cost=cost, steps=result.steps, renderer=renderer)
    shutil.rmtree(run.run_dir / "checkpoint", ignore_errors=True)
    return report


def fit_confidence(model, train, validation, cfg, device: str, *, outputs=None) -> dict:
    """Temperature scaling on validation logits (bounded and shrunk toward 1, with a note when the
    validation split is too small or error-free to say more: core.confidence.calibrate.fit_temperature), then
    the out-of-scope scorer: fitted on `train` embeddings, thresholded to keep `ood_target_recall`
    of in-scope validation queries (skipped, with a note, when there is no validation split).
    `outputs`: the validation (logits, embeddings) when the caller already has them."""
    labels = LabelMap(model.labels)
    logits, embeddings = outputs if outputs is not None else model.predict_all(validation.texts, device=device)
    y_val = np.asarray(labels.encode(validation.labels))
    if cfg.model.calibrate:
        fitted = fit_temperature(logits, y_val)
        model.temperature = fitted.temperature
        out = {"temperature": fitted.temperature, "temperature_fitted_on": fitted.n,
               **({"temperature_note": fitted.note} if fitted.note else {})}
    else:
        model.temperature = 1.0
        out = {"temperature": 1.0, "temperature_note": "calibrate=false: temperature left at 1"}
    name = cfg.model.ood_scorer
    if name != "none" and not len(validation):
        return out | {"ood_note": f"no out-of-scope scorer: ood_scorer={name} needs validation rows to set its threshold"}
    if name != "none":
        train_emb = None if SCORERS[name].needs == "logits" else model.encode(train.texts, device=device)
        model.ood = OutOfScopeDetector.fit(name, train_emb, labels.encode(train.labels), logits, embeddings,
                                           temperature=model.temperature, target_recall=cfg.model.ood_target_recall)
        out |= {"ood_scorer": model.ood.name, "ood_threshold": model.ood.threshold,
                "ood_target_in_scope_recall": model.ood.target_recall}
    return out
