"""Classification metrics (pure functions: arrays in, numbers out), the evaluator that feeds them
from a model, and the plots drawn from their results.

Conventions: macro-F1 is the unweighted mean of per-class F1 over the classes that appear in
y_true or y_pred (scikit-learn's `f1_score(average="macro")`, zero_division=0; 0 for no rows, as accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.data.splits import LabelMap
from core.evaluation import multilabel
from core.foundation.plots import pyplot


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else 0.0


def macro_f1(y_true, y_pred) -> float:
    """The labels as one-hot columns over the classes in either vector, scored by the multi-label
    macro-F1 (core.evaluation.multilabel: 2 TP / (predicted + true), averaged over the classes that
    appear): the module docstring's convention, equal to scikit-learn's, without importing it (every
    validation pass of a fit computes this, and the import cost a fit 1.6 s, profiled)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"macro_f1 takes two label vectors of one length; got {y_true.shape} and {y_pred.shape}")
    classes, both = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    one_hot = np.eye(len(classes), dtype=bool)[both]
    return multilabel.macro_f1(one_hot[:len(y_true)], one_hot[len(y_true):])


def confusion(y_true, y_pred, num_labels: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return matrix


def per_class_report(y_true, y_pred, labels: list[str]) -> dict[str, dict[str, float]]:
    """label -> precision, recall, f1, support (scikit-learn's definitions, zero_division=0)."""
    from sklearn.metrics import precision_recall_fscore_support  # lazy: scikit-learn costs start-up; only when used

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(len(labels))),
                                                 zero_division=0)
    return {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)}


SUMMARY_METRICS = (accuracy, macro_f1)


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Keys come from the function names so labels can't be swapped by hand."""
    return {fn.__name__: fn(y_true, y_pred) for fn in SUMMARY_METRICS}


class ClassificationEvaluator:
    """(model) -> metrics on one labelled split; `details` adds per-class report and confusion."""

    primary_metric = "accuracy"
    greater_is_better = True

    def __init__(self, texts: list[str], labels: list[str], name: str = "test", batch_size: int = 64):
        self.texts, self.labels, self.name, self.batch_size = texts, labels, name, batch_size

    def predictions(self, model, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        y_true = np.asarray(LabelMap(model.labels).encode(self.labels))
        probs = model.predict_proba(self.texts, batch_size=self.batch_size, device=device)
        return y_true, probs

    def __call__(self, model, device: str = "cpu", details: bool = False) -> dict:
        y_true, probs = self.predictions(model, device)
        return labelled_metrics(y_true, probs.argmax(axis=1), model.labels, details=details)


def labelled_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], details: bool = False) -> dict:
    """n + classification_metrics; `details` adds the per-class report and the confusion matrix."""
    out: dict = {"n": len(y_true), **classification_metrics(y_true, y_pred)}
    if details:
        out["per_class"] = per_class_report(y_true, y_pred, labels)
        out["confusion_matrix"] = confusion(y_true, y_pred, len(labels)).tolist()
    return out


def _rows_text(n: int | None) -> str:
    return f", {n:,} rows" if n is not None else ""


def plot_loss_curve(rows: list[dict], path: Path, metric: str = "accuracy", title: str | None = None, *,
                    train_rows: int | None = None, validation_rows: int | None = None) -> Path:
    """Training loss per logged step, and the validation metric on a second axis. The default
    title names both and, when given, the rows of the training data and the validation split."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.3))
    train = [r for r in rows if "train_loss" in r]
    ax.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss")
    evals = [r for r in rows if f"validation_{metric}" in r]
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r[f"validation_{metric}"] for r in evals], "o-",
                 color="tab:orange", label=f"validation {metric}")
        ax2.set_ylabel(f"validation {metric}")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    if title is None:
        shown = [f"training loss: training data{_rows_text(train_rows)}"]
        if evals:
            shown.append(f"validation {metric}: validation split{_rows_text(validation_rows)}")
        title = f"Training curve by step\n{'; '.join(shown)}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


COUNTS_IN_CELLS_MAX = 20  # more classes: the counts no longer fit in the cells
NAMED_TICKS_MAX = 40  # more classes: names would overlap, so ticks are class indices (order of `labels`)


def plot_confusion_matrix(matrix, labels: list[str], path: Path, title: str | None = None, split: str = "test") -> Path:
    """Row-normalised confusion matrix of `split` ([true, predicted] counts; its total is the
    split's row count, named in the default title). Up to COUNTS_IN_CELLS_MAX classes the cells
    show their counts; up to NAMED_TICKS_MAX the ticks are class names. Beyond, the ticks are class
    indices and the colour scale is square-root, so the few-percent confusions of a 150-class
    matrix stay visible beside its diagonal (report.md lists the most-confused pairs by name)."""
    from matplotlib.colors import Normalize, PowerNorm  # lazy: matplotlib only when a plot is drawn
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib only when a plot is drawn

    plt = pyplot()
    m = np.asarray(matrix, dtype=float)
    k, many = len(labels), len(labels) > NAMED_TICKS_MAX
    norm = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
    size = 10.0 if many else min(4 + 0.18 * k, 12)
    fig, ax = plt.subplots(figsize=(size, size))
    scale = PowerNorm(gamma=0.5, vmin=0, vmax=1) if many else Normalize(vmin=0, vmax=1)
    im = ax.imshow(norm, cmap="Blues", norm=scale)
    if many:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(10, integer=True))
        ax.set_xlabel("predicted class (index in the run's labels)")
        ax.set_ylabel("true class (index in the run's labels)")
    else:
        ticks, fontsize = np.arange(k), 9 if k <= COUNTS_IN_CELLS_MAX else 6
        ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, labels, fontsize=fontsize)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    if k <= COUNTS_IN_CELLS_MAX:
        for i, j in zip(*np.nonzero(m)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or f"Confusion matrix, {split} split ({int(m.sum()):,} rows), {k} classes\n"
                          f"each row normalised by its true class' rows", fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.046)
    bar.set_label("share of the true class' rows" + (" (square-root colour scale)" if many else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
