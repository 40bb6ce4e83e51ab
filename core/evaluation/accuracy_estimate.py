"""Accuracy estimated without labels: how accurate is a deployed classifier on traffic nobody has
labelled yet, from its calibrated confidences?

Two estimates, side by side:
- ATC, Average Thresholded Confidence (Garg et al. 2022, "Leveraging unlabeled data to predict
  out-of-distribution performance"): on labelled validation data, find the threshold t on a
  confidence score such that the share of validation rows scoring below t equals the validation
  error; on new data, the estimated accuracy is the share of rows scoring >= t. With Garg et
  al.'s balancing of "correct below t" against "wrong at or above t", t is exactly the
  (validation error)-quantile of the validation scores, so fitting needs only the scores and the
  validation accuracy, never the per-row correctness (`atc_threshold`).
- DoC, Difference of Confidences (Guillory et al. 2021): validation accuracy minus the drop of the
  average confidence, acc_val - (mean conf_val - mean conf_new). With perfectly calibrated
  confidences this is the average confidence itself; the difference form cancels a constant
  calibration offset on validation.

The score is the calibrated top-class probability (max-probability, "MC" in Garg et al.), not
negative entropy: it is what every consumer already records (the router's `confidence`, the
prediction log, the finance monitor's p_negative/p_neutral/p_positive, the drift baseline's
stored validation confidences), so old runs can be fitted from what they stored; negative entropy
needs the whole probability vector, which the logs do not keep. `negative_entropy` is here so the
benchmark (benchmarks/accuracy_estimate.py) can compare the two scores.

`AccuracyFit` is what a run stores (in drift_baseline.json, core.evaluation.drift_baseline):
threshold, validation accuracy, validation mean confidence, rows. `estimate_accuracy` turns it and
recent confidences into the report section (estimate, method, rows, the validation accuracy it
started from, the drop, and whether the drop passes the alert margin).
A multi-label run estimates its exact-set accuracy the same way, over SET_SCORE: the calibrated
probability that the whole predicted label set is right (core.models.multilabel.MultiLabelHead.
set_confidence), fitted against the validation exact-set accuracy. Its thresholds were chosen on
those same validation rows, so that accuracy is slightly optimistic, and so is the estimate.
Both assume the new errors look like validation's: confidence falling where errors rise. They
miss errors the model is sure of (unseen intents that look like known ones, confident label
noise); see docs/support.md.
Leaves out: where the confidences come from (the drift window, the prediction log, the monitor
database) and the alert wiring (core.evaluation.drift.drift_report).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCORE = "max_probability"  # the calibrated top-class probability (module docstring: why not entropy)
SET_SCORE = "predicted_set_probability"  # a multi-label run's score, against exact-set accuracy (below)
NOT_AVAILABLE = "not available"


def atc_threshold(validation_scores, validation_accuracy: float) -> float:
    """The ATC threshold t: the share of `validation_scores` strictly below t equals the validation
    error 1 - `validation_accuracy` (to within one row: k = round(error * n) rows fall below). t is
    the midpoint between the k-th and (k+1)-th smallest score; the smallest score when k = 0 (every
    row at or above: estimate 1.0), just above the largest when k = n (estimate 0.0)."""
    scores = np.sort(np.asarray(validation_scores, dtype=np.float64).ravel())
    if not len(scores):
        raise ValueError("atc_threshold needs at least one validation score")
    if not 0.0 <= validation_accuracy <= 1.0:
        raise ValueError(f"validation_accuracy must be in [0, 1], got {validation_accuracy}")
    n = len(scores)
    k = int(np.rint((1.0 - validation_accuracy) * n))
    if k == 0:
        return float(scores[0])
    if k == n:
        return float(np.nextafter(scores[-1], np.inf))
    return float((scores[k - 1] + scores[k]) / 2)


def atc_estimate(threshold: float, scores) -> float:
    """Share of `scores` at or above `threshold`: the ATC accuracy estimate."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not len(scores):
        raise ValueError("atc_estimate needs at least one score")
    return float((scores >= threshold).mean())


def doc_estimate(validation_accuracy: float, validation_mean_confidence: float, scores) -> float:
    """DoC: validation_accuracy - (validation_mean_confidence - mean(scores)), clipped to [0, 1]."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not len(scores):
        raise ValueError("doc_estimate needs at least one score")
    return float(np.clip(validation_accuracy - (validation_mean_confidence - scores.mean()), 0.0, 1.0))


def negative_entropy(probs) -> np.ndarray:
    """sum p log p per row (0 log 0 = 0): 0 for a one-hot row, -log K for a uniform one."""
    p = np.asarray(probs, dtype=np.float64)
    return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


@dataclass(frozen=True)
class AccuracyFit:
    """What a run stores to estimate its accuracy later (the module docstring)."""

    threshold: float
    validation_accuracy: float
    validation_mean_confidence: float
    n_validation: int
    score: str = SCORE
    fitted_from: str = "every validation row at training time"

    @classmethod
    def fit(cls, validation_confidence, validation_accuracy: float, *,
            fitted_from: str = "every validation row at training time", score: str = SCORE) -> AccuracyFit:
        conf = np.asarray(validation_confidence, dtype=np.float64).ravel()
        return cls(threshold=atc_threshold(conf, validation_accuracy), validation_accuracy=float(validation_accuracy),
                   validation_mean_confidence=float(conf.mean()), n_validation=len(conf), score=score,
                   fitted_from=fitted_from)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, meta: dict) -> AccuracyFit:
        return cls(threshold=float(meta["threshold"]), validation_accuracy=float(meta["validation_accuracy"]),
                   validation_mean_confidence=float(meta["validation_mean_confidence"]),
                   n_validation=int(meta["n_validation"]), score=str(meta.get("score", SCORE)),
                   fitted_from=str(meta.get("fitted_from", "")))


def estimate_accuracy(fit: AccuracyFit | None, confidence, *, max_drop: float, note: str = "") -> dict:
    """The report section: ATC (the estimate alerted on) and DoC beside it, over `confidence` (the
    calibrated top-class probabilities of recent predictions of the fitted model). `drop`:
    validation accuracy minus the ATC estimate; `alert` when it is above `max_drop`. Without a fit
    (or without rows): {"estimate": None, "status": "not available: <why>"}."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    if fit is None or not len(confidence):
        why = note or ("the run stores no accuracy fit" if fit is None else "no predictions")
        return {"estimate": None, "method": None, "rows": len(confidence), "alert": False,
                "status": f"{NOT_AVAILABLE}: {why}"}
    atc = atc_estimate(fit.threshold, confidence)
    return {"estimate": atc, "method": f"ATC ({fit.score})", "rows": len(confidence),
            "doc_estimate": doc_estimate(fit.validation_accuracy, fit.validation_mean_confidence, confidence),
            "validation_accuracy": fit.validation_accuracy, "threshold": fit.threshold,
            "drop": fit.validation_accuracy - atc, "max_drop": max_drop,
            "alert": fit.validation_accuracy - atc > max_drop, "fitted_from": fit.fitted_from, "status": "ok"}
