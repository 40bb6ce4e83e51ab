"""A multi-label classifier's decision layer: per-label sigmoid probabilities and thresholds.

The network is the ordinary core.models.classifier.TextClassifier (encoder, pooling, one linear
head); what makes it multi-label is how its logits are read, saved beside it as
`model/multilabel.json`: probabilities sigmoid(logits / T) per label (T = the classifier's
temperature, fitted on validation by core.confidence.multilabel), and a label is predicted when
its probability reaches its own threshold (chosen on validation). `load_multilabel_head(model_dir)`
is None for a single-label run, which is how the router and the export tell them apart.
`init_head_from_ovr_probe` starts the head from one logistic regression per label on frozen
embeddings (one-vs-rest), the multi-label counterpart of init_head_from_probe.
Leaves out: training (core.classify.multilabel) and choosing thresholds (core.confidence.multilabel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.confidence.multilabel import sigmoid
from core.foundation.errors import UserError

HEAD_FILE = "multilabel.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class MultiLabelHead:
    labels: list[str]
    thresholds: np.ndarray  # [labels], applied to the calibrated probabilities

    def probabilities(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        return sigmoid(logits, temperature)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """[rows, labels] bool: each label at or above its threshold."""
        return np.asarray(probs) >= self.thresholds[None, :]

    def primary(self, probs: np.ndarray) -> np.ndarray:
        """[rows] int: the primary label of each row, the most probable among the labels at or above
        their thresholds, or the most probable label when none is (the router's `intent`)."""
        probs = np.asarray(probs, dtype=np.float64)
        cleared = np.where(self.decide(probs), probs, -np.inf)
        return np.where(cleared.max(axis=1) > -np.inf, cleared.argmax(axis=1), probs.argmax(axis=1))

    def set_confidence(self, probs: np.ndarray) -> np.ndarray:
        """[rows] the calibrated probability that each row's predicted label set is exactly right, the
        labels taken as independent: prod_j (p_j if label j is decided else 1 - p_j). It is the score
        the accuracy estimator thresholds for a multi-label run (core.evaluation.drift_baseline), as
        the top-class probability is for a single-label one."""
        probs = np.asarray(probs, dtype=np.float64)
        clipped = np.clip(probs, 1e-12, 1.0 - 1e-12)
        log_terms = np.where(self.decide(probs), np.log(clipped), np.log1p(-clipped))
        return np.exp(log_terms.sum(axis=1))

    def out_of_scope(self, probs: np.ndarray, in_scope_scores: np.ndarray | None, ood_threshold: float | None):
        """[rows] bool: no label clears its threshold AND (with an out-of-scope detector) the query's
        in-scope score is below the detector's threshold, i.e. it is far from every intent."""
        none_clear = ~self.decide(probs).any(axis=1)
        if in_scope_scores is None or ood_threshold is None:
            return none_clear
        return none_clear & (np.asarray(in_scope_scores) < ood_threshold)

    def save(self, directory: Path) -> dict:
        record = {"format_version": FORMAT_VERSION, "activation": "sigmoid",
                  "probabilities": "sigmoid(logits / temperature), per label",
                  "thresholds": {label: float(t) for label, t in zip(self.labels, self.thresholds)}}
        (Path(directory) / HEAD_FILE).write_text(json.dumps(record, indent=2))
        return record


def load_multilabel_head(directory: Path) -> MultiLabelHead | None:
    """The multi-label head saved in a model folder, or None (a single-label run)."""
    path = Path(directory) / HEAD_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    thresholds = record.get("thresholds")
    if record.get("activation") != "sigmoid" or not isinstance(thresholds, dict) or not thresholds:
        raise UserError(f"{path} is not a multi-label head this verticals reads (format {record.get('format_version')})")
    labels = list(thresholds)
    return MultiLabelHead(labels, np.asarray([float(thresholds[k]) for k in labels], dtype=np.float64))


def init_head_from_ovr_probe(model, embeddings: np.ndarray, targets: np.ndarray, *, c: float = 10.0) -> float:
    """One logistic regression per label (C = `c`) on frozen `embeddings` against that label's 0/1
    column, copied into the head; a label with one class only (every row, or none) gets weight 0 and
    a bias of +-10. Returns the mean per-label training accuracy."""
    import torch  # lazy: the router and `import verticals` read heads without loading torch
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn costs start-up; only when used

    x, y = np.asarray(embeddings), np.asarray(targets) > 0.5
    weight = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    bias = np.zeros(y.shape[1], dtype=np.float32)
    scores = []
    for j in range(y.shape[1]):
        if y[:, j].all() or not y[:, j].any():
            bias[j] = 10.0 if y[:, j].all() else -10.0
            scores.append(1.0)
            continue
        probe = LogisticRegression(C=c, max_iter=2000).fit(x, y[:, j])
        weight[j], bias[j] = probe.coef_[0], probe.intercept_[0]
        scores.append(float(probe.score(x, y[:, j])))
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    return float(np.mean(scores))
