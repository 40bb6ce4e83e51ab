"""Out-of-scope (out-of-distribution) scores for a trained classifier, learned without any
out-of-scope training data, and the threshold that keeps a target share of in-scope traffic.

Every scorer follows one convention: a higher score means "more in-scope". Scorers that need
statistics of the training data (`fit`) keep them as arrays so they can be saved with safetensors.
- max_prob: the top softmax probability (Hendrycks & Gimpel 2017).
- energy: T * logsumexp(logits / T) (Liu et al. 2020).
- centroid: cosine similarity to the nearest class centroid of training embeddings.
- knn: mean cosine similarity to the k nearest training embeddings (Sun et al. 2022).
- mahalanobis: minus the smallest Mahalanobis distance to a class mean, with one shared
  (pooled within-class) covariance (Lee et al. 2018; Podolskiy et al. 2021 for transformers).
- relative_mahalanobis: that distance minus the distance to the mean of all training data
  under the covariance of all training data (Ren et al. 2021), which discounts directions
  in which every sentence varies.
- knn_energy: the kNN score and the energy score, each standardised on in-scope validation
  queries, added. The two fail on different queries (an out-of-scope text close to one training
  sentence vs one the head is confidently wrong about), so the sum separates better than either:
  on BANKING77 with 10 intents held out, validation AUROC 0.938 vs 0.931 (knn, k=5) and 0.921
  (energy); see benchmarks/support_banking77.py.

`OutOfScopeDetector` bundles a fitted scorer with its threshold and target recall: the object a
model carries, saves (safetensors) and the router consults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.confidence.calibrate import softmax


def _cosines(x: np.ndarray, unit_rows: np.ndarray) -> np.ndarray:
    """Cosine similarities [n, m] of rows of x with unit rows. The matmul runs in torch on purpose:
    a NumPy (OpenBLAS) matmul between two torch forward passes leaves OpenBLAS threads spinning
    against torch's and made single-query routing 3x slower (measured: 30 ms vs 9 ms)."""
    import torch  # lazy: torch costs seconds of start-up

    return (torch.from_numpy(_unit(x)) @ torch.from_numpy(np.ascontiguousarray(unit_rows, dtype=np.float32)).T).numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


class MaxProbability:
    name = "max_prob"
    needs = "logits"

    def fit(self, embeddings, labels) -> "MaxProbability":
        return self

    def score(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return softmax(logits, temperature).max(axis=1)

    def state(self) -> dict[str, np.ndarray]:
        return {}


class Energy(MaxProbability):
    name = "energy"

    def score(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        from scipy.special import logsumexp  # lazy: scipy costs start-up; only when used

        return temperature * logsumexp(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


class Centroid:
    name = "centroid"
    needs = "embeddings"

    def __init__(self, centroids: np.ndarray | None = None):
        self.centroids = centroids

    def fit(self, embeddings, labels) -> "Centroid":
        emb, labels = _unit(embeddings), np.asarray(labels)
        self.centroids = _unit(np.stack([emb[labels == c].mean(axis=0) for c in np.unique(labels)]))
        return self

    def score(self, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return _cosines(embeddings, self.centroids).max(axis=1)

    def state(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}


class KNearest:
    name = "knn"
    needs = "embeddings"

    def __init__(self, bank: np.ndarray | None = None, k: int = 5):
        self.bank, self.k = bank, k

    def fit(self, embeddings, labels) -> "KNearest":
        self.bank = _unit(embeddings)
        return self

    def score(self, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        sims = _cosines(embeddings, self.bank)
        k = min(self.k, sims.shape[1])
        return np.sort(np.partition(sims, -k, axis=1)[:, -k:], axis=1).mean(axis=1)

    def state(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank, "k": np.asarray([self.k])}


class KnnEnergy:
    """kNN + energy, each standardised (mean 0, std 1) on in-scope validation scores; until
    `standardise` is called the raw scores are added."""

    name = "knn_energy"
    needs = "both"

    def __init__(self, bank: np.ndarray | None = None, k: int = 5, stats: np.ndarray | None = None):
        self.knn = KNearest(bank, k)
        self.stats = np.asarray([0.0, 1.0, 0.0, 1.0], dtype=np.float32) if stats is None else np.asarray(stats, dtype=np.float32)

    def fit(self, embeddings, labels) -> "KnnEnergy":
        self.knn.fit(embeddings, labels)
        return self

    def _parts(self, logits, embeddings, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        return self.knn.score(embeddings), Energy().score(logits, temperature)

    def standardise(self, logits: np.ndarray, embeddings: np.ndarray, temperature: float = 1.0) -> "KnnEnergy":
        """Set each part's mean and std from in-scope (validation) queries."""
        knn, energy = self._parts(logits, embeddings, temperature)
        self.stats = np.asarray([knn.mean(), max(knn.std(), 1e-6), energy.mean(), max(energy.std(), 1e-6)],
                                dtype=np.float32)
        return self

    def score(self, logits: np.ndarray, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        knn, energy = self._parts(logits, embeddings, temperature)
        m1, s1, m2, s2 = (float(v) for v in self.stats)
        return (knn - m1) / s1 + (energy - m2) / s2

    def state(self) -> dict[str, np.ndarray]:
        return {**self.knn.state(), "stats": self.stats}


def _precision(centred: np.ndarray, shrinkage: float) -> np.ndarray:
    """Inverse of the covariance of `centred` rows, shrunk towards a scaled identity so that a
    few hundred examples in 384 dimensions still give a well-conditioned matrix."""
    cov = np.cov(centred, rowvar=False, bias=True).astype(np.float64)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.linalg.inv(cov).astype(np.float32)


def _min_mahalanobis(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min over rows m of means of (x - m)^T P (x - m), expanded into matmuls (in torch, see _cosines)."""
    import torch  # lazy: torch costs seconds of start-up

    xt, mt, pt = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (x, means, precision))
    xp = xt @ pt
    d = (xp * xt).sum(dim=1, keepdim=True) - 2 * xp @ mt.T + ((mt @ pt) * mt).sum(dim=1)[None, :]
    return d.min(dim=1).values.numpy()


class Mahalanobis:
    name = "mahalanobis"
    needs = "embeddings"

    def __init__(self, means: np.ndarray | None = None, precision: np.ndarray | None = None,
                 shrinkage: float = 0.1):
        self.means, self.precision, self.shrinkage = means, precision, shrinkage

    def fit(self, embeddings, labels) -> "Mahalanobis":
        emb, labels = np.asarray(embeddings, dtype=np.float32), np.asarray(labels)
        classes = np.unique(labels)
        self.means = np.stack([emb[labels == c].mean(axis=0) for c in classes])
        centred = emb - self.means[np.searchsorted(classes, labels)]
        self.precision = _precision(centred, self.shrinkage)
        return self

    def score(self, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return -_min_mahalanobis(embeddings, self.means, self.precision)

    def state(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "precision": self.precision}


class RelativeMahalanobis(Mahalanobis):
    name = "relative_mahalanobis"

    def __init__(self, means=None, precision=None, background_mean=None, background_precision=None,
                 shrinkage: float = 0.1):
        super().__init__(means, precision, shrinkage)
        self.background_mean, self.background_precision = background_mean, background_precision

    def fit(self, embeddings, labels) -> "RelativeMahalanobis":
        super().fit(embeddings, labels)
        emb = np.asarray(embeddings, dtype=np.float32)
        self.background_mean = emb.mean(axis=0, keepdims=True)
        self.background_precision = _precision(emb - self.background_mean, self.shrinkage)
        return self

    def score(self, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        background = _min_mahalanobis(embeddings, self.background_mean, self.background_precision)
        return background - _min_mahalanobis(embeddings, self.means, self.precision)

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "background_mean": self.background_mean,
                "background_precision": self.background_precision}


SCORERS = {"max_prob": MaxProbability, "energy": Energy, "centroid": Centroid, "knn": KNearest,
           "mahalanobis": Mahalanobis, "relative_mahalanobis": RelativeMahalanobis, "knn_energy": KnnEnergy}


def scorer_from_state(name: str, state: dict[str, np.ndarray]):
    if name == "centroid":
        return Centroid(state["centroids"])
    if name == "knn":
        return KNearest(state["bank"], int(state["k"][0]))
    if name == "knn_energy":
        return KnnEnergy(state["bank"], int(state["k"][0]), state["stats"])
    if name in ("mahalanobis", "relative_mahalanobis"):
        return SCORERS[name](**state)
    return SCORERS[name]()


def fit_scorer(name: str, train_embeddings: np.ndarray | None, train_labels, val_logits: np.ndarray,
               val_embeddings: np.ndarray, temperature: float = 1.0):
    """A scorer fitted on training embeddings (None for scorers that need only logits) and, for
    those that standardise (knn_energy), on in-scope validation outputs."""
    scorer = SCORERS[name]()
    if scorer.needs != "logits":
        scorer.fit(train_embeddings, train_labels)
    if hasattr(scorer, "standardise"):
        scorer.standardise(val_logits, val_embeddings, temperature)
    return scorer


def in_scope_scores(scorer, logits: np.ndarray, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Feed a scorer what it declares it needs (`needs`: logits, embeddings or both)."""
    if scorer.needs == "both":
        return scorer.score(logits, embeddings, temperature)
    return scorer.score(logits if scorer.needs == "logits" else embeddings, temperature)


def threshold_for_recall(in_scope_scores: np.ndarray, target_recall: float) -> float:
    """The largest threshold t with at least `target_recall` of in-scope scores >= t."""
    scores = np.sort(np.asarray(in_scope_scores))
    drop = int(np.floor(len(scores) * (1.0 - target_recall)))
    return float(scores[min(drop, len(scores) - 1)])


def auroc(in_scope_scores, out_scope_scores) -> float:
    """Area under ROC for separating in-scope (positive) from out-of-scope by score; ties count 1/2."""
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn costs start-up; only when used

    y = np.r_[np.ones(len(in_scope_scores)), np.zeros(len(out_scope_scores))]
    return float(roc_auc_score(y, np.r_[in_scope_scores, out_scope_scores]))


class OutOfScopeDetector:
    """A fitted in-scope scorer with the threshold chosen on validation for a target in-scope recall:
    what a model carries (`model.ood`), saves beside its weights and the router asks "hand over?".
    `scores(...)` >= `threshold` means in scope."""

    FILE = "ood.safetensors"

    def __init__(self, scorer, threshold: float, target_recall: float):
        self.scorer, self.threshold, self.target_recall = scorer, float(threshold), float(target_recall)

    @property
    def name(self) -> str:
        return self.scorer.name

    @classmethod
    def fit(cls, name: str, train_embeddings: np.ndarray | None, train_labels, val_logits: np.ndarray,
            val_embeddings: np.ndarray, *, temperature: float = 1.0, target_recall: float = 0.95) -> "OutOfScopeDetector":
        """Fit scorer `name` (one of SCORERS) on training embeddings and in-scope validation outputs,
        then keep `target_recall` of the in-scope validation queries above the threshold."""
        scorer = fit_scorer(name, train_embeddings, train_labels, val_logits, val_embeddings, temperature)
        threshold = threshold_for_recall(in_scope_scores(scorer, val_logits, val_embeddings, temperature), target_recall)
        return cls(scorer, threshold, target_recall)

    def scores(self, logits: np.ndarray, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """In-scope scores, one per row (higher = more in scope)."""
        return in_scope_scores(self.scorer, logits, embeddings, temperature)

    def is_out_of_scope(self, logits: np.ndarray, embeddings: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return self.scores(logits, embeddings, temperature) < self.threshold

    def describe(self) -> dict:
        """What classifier.json and the router's /info say about it."""
        return {"scorer": self.name, "threshold": self.threshold, "target_in_scope_recall": self.target_recall}

    def save(self, directory) -> dict:
        """Write the scorer's arrays to `directory/ood.safetensors`; returns the description to keep."""
        import torch  # lazy: torch costs seconds of start-up
        from safetensors.torch import save_file  # lazy: safetensors.torch pulls in torch

        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.scorer.state().items()}
        save_file(state or {"empty": torch.zeros(1)}, Path(directory) / self.FILE)
        return self.describe()

    @classmethod
    def load(cls, directory, description: dict | None) -> "OutOfScopeDetector | None":
        """The detector saved in `directory` with `description` (classifier.json's "ood"), or None."""
        if not description:
            return None

        from safetensors.torch import load_file  # lazy: safetensors.torch pulls in torch

        state = {k: v.numpy() for k, v in load_file(Path(directory) / cls.FILE).items()}
        return cls(scorer_from_state(description["scorer"], state), float(description["threshold"]),
                   float(description["target_in_scope_recall"]))

    def __repr__(self) -> str:
        return (f"OutOfScopeDetector(scorer={self.name!r}, threshold={self.threshold:.4f}, "
                f"target_recall={self.target_recall})")
