"""Confidence calibration: temperature scaling (Guo et al. 2017) fitted on a validation split,
expected calibration error, and the reliability diagram.

Temperature scaling cannot run away (`fit_temperature`): log T has a N(0, TEMPERATURE_PRIOR_SD^2)
prior (a MAP fit, so a few rows barely move T from 1 while thousands decide it), T stays within
[T_MIN, T_MAX], and T >= 1 when the classifier makes no validation error (NLL then falls all the
way to T -> 0: a separable split says nothing about how sharp confidences should be; the unbounded
fit gave the demo T=0.018 and a confidence of 1.0 on every query). Below MIN_CALIBRATION_ROWS
validation rows T stays at 1. Each such case comes back with a note for the report.

Conventions: ECE uses `n_bins` equal-width bins over the top-class confidence in [0, 1];
ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|; empty bins contribute 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.foundation.plots import pyplot


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / T)[label], from log-softmax (exact for confident mistakes too:
    clipping probabilities would flatten the NLL there and hide which way T should move)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), np.asarray(labels)].mean())


T_MIN, T_MAX = 0.05, 20.0
TEMPERATURE_PRIOR_SD = 0.5  # on log T: T in [0.37, 2.7] at two standard deviations, before any data
MIN_CALIBRATION_ROWS = 20


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    n: int  # validation rows it was fitted on
    note: str = ""  # why T was left at / kept near 1, or hit a bound ("" when the data decided it)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, prior_sd: float = TEMPERATURE_PRIOR_SD,
                    min_rows: int = MIN_CALIBRATION_ROWS) -> TemperatureFit:
    """MAP temperature: argmin over log T of  n * NLL(softmax(logits / T)) + (log T)^2 / (2 prior_sd^2),
    with T in [T_MIN, T_MAX], and T >= 1 when every validation row is classified correctly."""
    from scipy.optimize import minimize_scalar  # lazy: scipy costs start-up; only when used

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    n = len(labels)
    if n < min_rows:
        return TemperatureFit(1.0, n, f"temperature left at 1: only {n} validation rows (calibration needs "
                                      f"{min_rows}+), too little evidence")
    separable = bool((logits.argmax(axis=1) == labels).all())
    low = 0.0 if separable else np.log(T_MIN)

    def objective(log_t: float) -> float:
        return n * negative_log_likelihood(logits, labels, float(np.exp(log_t))) + log_t ** 2 / (2 * prior_sd ** 2)

    result = minimize_scalar(objective, bounds=(low, np.log(T_MAX)), method="bounded")
    log_t = float(result.x)
    if separable and log_t < 1e-3:  # the bounded search stops a hair above its bound
        return TemperatureFit(1.0, n, f"temperature left at 1: no errors on the {n} validation rows, too "
                                      f"little evidence to sharpen the confidences")
    t = float(np.exp(log_t))
    at_bound = min(abs(log_t - np.log(T_MIN)), abs(log_t - np.log(T_MAX))) < 1e-2
    return TemperatureFit(t, n, f"temperature stopped at its bound {t:.3g} (allowed {T_MIN}..{T_MAX})" if at_bound else "")


def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """Per bin: (lower edge, upper edge, count, accuracy, mean confidence)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        rows.append((edges[b], edges[b + 1], n, float(correct[mask].mean()) if n else 0.0,
                     float(conf[mask].mean()) if n else 0.0))
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    n = len(labels)
    return float(sum(count / n * abs(acc - conf) for _, _, count, acc, conf in calibration_bins(probs, labels, n_bins)
                     if count)) if n else 0.0


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n_bins: int = 15,
                     title: str | None = None, split: str = "test") -> Path:
    """One reliability curve per name (e.g. before / after temperature scaling), ECE in the legend;
    the default title names `split` and its row count (the rows of the first curve)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for name, (probs, labels) in curves.items():
        bins = [b for b in calibration_bins(probs, labels, n_bins) if b[2]]
        ece = expected_calibration_error(probs, labels, n_bins)
        ax.plot([b[4] for b in bins], [b[3] for b in bins], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    n = len(next(iter(curves.values()))[1]) if curves else 0
    ax.set_title(title or f"Reliability diagram, {split} split ({n:,} rows)\n{n_bins} equal-width confidence bins",
                 fontsize=10)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
