"""Confidence for multi-label heads: sigmoid probabilities, their temperature, per-label thresholds.

Probabilities are sigmoid(logits / T) per label. `fit_sigmoid_temperature` fits one temperature T
shared by every label on the validation split: the MAP fit of the binary cross-entropy over every
(row, label) entry, with the same log-normal prior, bounds and minimum of rows as softmax
temperature scaling (core.confidence.calibrate.fit_temperature). One parameter rather than one
per label (Platt per label) because a label has a handful of validation positives; one T folds
into an exported head as W/T, b/T like the softmax one, so a transformers pipeline with
function_to_apply="sigmoid" gives the calibrated probabilities.
`choose_thresholds` picks each label's decision threshold on validation: the grid value with the
best F1 of that label (ties: the value closest to 0.5); a label without validation positives keeps
DEFAULT_THRESHOLD. Thresholds are never chosen on test.
Leaves out: metrics (core.evaluation.multilabel) and applying thresholds (core.models.multilabel).
"""

from __future__ import annotations

import numpy as np

from core.confidence.calibrate import MIN_CALIBRATION_ROWS, T_MAX, T_MIN, TEMPERATURE_PRIOR_SD

DEFAULT_THRESHOLD = 0.5
THRESHOLD_GRID = tuple(round(x, 2) for x in np.arange(0.05, 0.951, 0.05))


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow


def binary_cross_entropy(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean BCE of sigmoid(logits / T) against 0/1 targets over every entry, from log-sigmoid."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(targets, dtype=np.float64)
    return float((np.logaddexp(0.0, z) - y * z).mean())


def fit_sigmoid_temperature(logits: np.ndarray, targets: np.ndarray, *, prior_sd: float = TEMPERATURE_PRIOR_SD,
                            min_rows: int = MIN_CALIBRATION_ROWS) -> tuple[float, str]:
    """(T, note): argmin over log T of  n * BCE(sigmoid(logits / T)) + (log T)^2 / (2 prior_sd^2), T in
    [T_MIN, T_MAX]; T = 1 (with a note) under `min_rows` rows; a note when T stops at a bound."""
    from scipy.optimize import minimize_scalar  # lazy: scipy costs start-up; only when used

    n = len(logits)
    if n < min_rows:
        return 1.0, f"temperature left at 1: only {n} validation rows (calibration needs {min_rows}+)"

    def objective(log_t: float) -> float:
        return n * binary_cross_entropy(logits, targets, float(np.exp(log_t))) + log_t ** 2 / (2 * prior_sd ** 2)

    log_t = float(minimize_scalar(objective, bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded").x)
    t = float(np.exp(log_t))
    at_bound = min(abs(log_t - np.log(T_MIN)), abs(log_t - np.log(T_MAX))) < 1e-2
    return t, (f"temperature stopped at its bound {t:.3g} (allowed {T_MIN}..{T_MAX})" if at_bound else "")


def label_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of one label's 0/1 columns; 0 when it has neither true nor predicted positives."""
    tp = float((y_true & y_pred).sum())
    denom = float(y_true.sum() + y_pred.sum())
    return 2 * tp / denom if denom else 0.0


def choose_thresholds(probs: np.ndarray, targets: np.ndarray, grid=THRESHOLD_GRID) -> np.ndarray:
    """One threshold per label (column) from `grid`: best validation F1, ties closest to 0.5."""
    probs, y = np.asarray(probs), np.asarray(targets) > 0.5
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD, dtype=np.float64)
    for j in range(probs.shape[1]):
        if not y[:, j].any():
            continue
        scored = [(label_f1(y[:, j], probs[:, j] >= t), -abs(t - DEFAULT_THRESHOLD), t) for t in grid]
        out[j] = max(scored)[2]
    return out
