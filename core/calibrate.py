"""Confidence calibration: temperature scaling (Guo et al. 2017) fitted on a validation split,
expected calibration error, and the reliability diagram.

Conventions: ECE uses `n_bins` equal-width bins over the top-class confidence in [0, 1];
ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|; empty bins contribute 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T); searched over log T."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=(-4.0, 4.0), method="bounded")
    return float(np.exp(result.x))


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


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n_bins: int = 15) -> Path:
    """One reliability curve per name (e.g. before / after temperature scaling), ECE in the legend."""
    from core.evaluate import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for name, (probs, labels) in curves.items():
        bins = [b for b in calibration_bins(probs, labels, n_bins) if b[2]]
        ece = expected_calibration_error(probs, labels, n_bins)
        ax.plot([b[4] for b in bins], [b[3] for b in bins], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
