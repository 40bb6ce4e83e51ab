"""Multi-label metrics: pure functions of 0/1 matrices [rows, labels] (and probabilities for ECE).

- exact_set_accuracy: share of rows whose predicted label set equals the true set exactly (a row
  predicted with no label is wrong).
- per_label_prf: precision, recall, F1 and support of each label; 0 where undefined (no predicted
  positives for precision, no true positives for recall, neither for F1), as sklearn's zero_division=0.
- micro_f1: F1 of the pooled counts over every label. macro_f1: the mean F1 over the labels that
  occur in the truth or in the predictions (a label absent from both says nothing about the model).
- label_ece: expected calibration error of the per-label probabilities, every (row, label) entry
  one binary prediction: sum_b |B_b| / N * |mean target(B_b) - mean probability(B_b)| with
  `n_bins` equal-width bins over [0, 1]. Easy negatives dominate it when there are many labels,
  so `positive_ece` also gives it over the entries predicted positive (probability >= 0.5).
Leaves out: thresholds and temperature (core.confidence.multilabel), single-label metrics
(core.evaluation.metrics).
"""

from __future__ import annotations

import numpy as np


def _bool(m) -> np.ndarray:
    return np.asarray(m) > 0.5


def exact_set_accuracy(y_true, y_pred) -> float:
    t, p = _bool(y_true), _bool(y_pred)
    return float((t == p).all(axis=1).mean()) if len(t) else 0.0


def per_label_prf(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, f1, support) arrays, one entry per label (column)."""
    t, p = _bool(y_true), _bool(y_pred)
    tp = (t & p).sum(axis=0).astype(np.float64)
    n_pred, n_true = p.sum(axis=0).astype(np.float64), t.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = np.divide(2 * tp, n_pred + n_true, out=np.zeros_like(tp), where=(n_pred + n_true) > 0)
    return precision, recall, f1, n_true.astype(np.int64)


def micro_f1(y_true, y_pred) -> float:
    t, p = _bool(y_true), _bool(y_pred)
    denom = float(t.sum() + p.sum())
    return 2 * float((t & p).sum()) / denom if denom else 0.0


def macro_f1(y_true, y_pred) -> float:
    t, p = _bool(y_true), _bool(y_pred)
    used = t.any(axis=0) | p.any(axis=0)
    return float(per_label_prf(t, p)[2][used].mean()) if used.any() else 0.0


def label_ece(probs, targets, n_bins: int = 15) -> float:
    probs, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    if not len(probs):
        return 0.0
    which = np.clip(np.digitize(probs, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            total += mask.sum() / len(probs) * abs(y[mask].mean() - probs[mask].mean())
    return float(total)


def positive_ece(probs, targets, n_bins: int = 15) -> float:
    probs, y = np.asarray(probs).ravel(), np.asarray(targets).ravel()
    keep = probs >= 0.5
    return label_ece(probs[keep], y[keep], n_bins) if keep.any() else 0.0


def top1_accuracy(y_true, scores) -> float:
    """Share of rows whose highest-scoring label is one of their true labels."""
    t = _bool(y_true)
    return float(t[np.arange(len(t)), np.asarray(scores).argmax(axis=1)].mean()) if len(t) else 0.0


def multilabel_metrics(y_true, y_pred, scores=None) -> dict:
    """The report's metrics of one split (keys are the function names above)."""
    t = _bool(y_true)
    out = {"n": int(len(t)), "exact_set_accuracy": exact_set_accuracy(t, y_pred),
           "micro_f1": micro_f1(t, y_pred), "macro_f1": macro_f1(t, y_pred),
           "multi_label_rows": int((t.sum(axis=1) > 1).sum())}
    if scores is not None:
        out["top1_accuracy"] = top1_accuracy(t, scores)
    return out


def per_label_report(y_true, y_pred, labels: list[str]) -> dict[str, dict]:
    precision, recall, f1, support = per_label_prf(y_true, y_pred)
    return {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])} for i, label in enumerate(labels)}
