"""Active learning: which unlabelled texts are worth a human's label next, from a model's view of them.

A `Pool` is what the model says about the unlabelled candidates (calibrated probabilities [n, classes],
and for the embedding strategies the head's input embeddings [n, dim]) plus the embeddings of texts
already labelled. `select(strategy, pool, budget, rng)` returns `Picks`: pool rows in pick order and
each pick's score. The strategies (STRATEGIES, the names `--strategy` takes):

- `margin`: the smallest top-1 minus top-2 probability first (margin sampling, Scheffer et al. 2001):
  the rows the model can hardly tell between two classes. Score: the margin (smaller: more ambiguous).
- `entropy`: the largest predictive entropy first (nats). Score: the entropy.
- `badge`: BADGE (Ash et al. 2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
  Bounds"): k-means++ seeding on gradient embeddings g = (one-hot(argmax p) - p) (x) x, the gradient of
  the cross-entropy at the predicted label with respect to a softmax/linear head's weights. The first
  pick is the largest gradient norm (as the authors' code does), then D^2 sampling: uncertain rows
  (large norm) that are unlike the picks so far. Score: the gradient-embedding norm.
- `coreset`: greedy k-center (Sener & Savarese 2018, "Active Learning for Convolutional Neural
  Networks: A Core-Set Approach"): each pick is the row farthest (Euclidean, on the embeddings) from
  its nearest centre, the centres being the labelled texts and the picks so far; with nothing labelled
  the first pick is drawn with `rng`. Score: that distance (NaN for such a first pick).
- `random`: uniform without replacement: the baseline every other strategy must beat. Score: NaN.

Ties (margin, entropy) go to the earlier pool row. A budget above the pool size picks the whole pool.
Multi-label models (a sigmoid per label, each with its own decision threshold: `Pool.thresholds`)
are read label by label (binary relevance): `margin` is the distance of the label closest to its
threshold, min_j |p_j - t_j| (the decision the model is least sure of); `entropy` the sum of the
labels' binary entropies; `badge`'s factor is the binary cross-entropy gradient at the predicted set,
1[p_j >= t_j] - p_j; coreset and random do not read probabilities.
Pure: arrays and a numpy Generator in, indices out; no model, files or global random state.

Why hand-written rather than a library: small-text's query strategies take its own classifier and
dataset wrappers (and its BADGE materialises the gradient embeddings); scikit-learn's
`kmeans_plusplus` needs them as a matrix too, n x (classes x dim): 1.1 GB for BANKING77's
training pool (77 intents x 384 MiniLM dimensions x 10k rows). Their squared distances factor,
|a (x) x - b (x) y|^2 = |a|^2 |x|^2 + |b|^2 |y|^2 - 2 (a.b)(x.y), so the D^2 sampling here never builds
them: O(n (classes + dim)) per pick. Margin, entropy and k-center are a few lines each.
Leaves out: reading prediction logs and query files and the labelling sheet (solutions.support.labelling),
the model (the caller passes its probabilities and embeddings), the benchmark (benchmarks.active_learning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.foundation.errors import UserError


@dataclass(frozen=True)
class Pool:
    """The candidates as the model sees them. `probs`: [n, classes] (rows sum to 1); `embeddings`:
    [n, dim], the head's input (needed by badge and coreset); `labelled`: [m, dim] embeddings of texts
    already labelled (coreset's first centres; None or [0, dim] when none)."""

    probs: np.ndarray
    embeddings: np.ndarray | None = None
    labelled: np.ndarray | None = None
    thresholds: np.ndarray | None = None  # [classes]: a multi-label model's per-label thresholds (docstring)

    def __len__(self) -> int:
        return len(self.probs)


@dataclass(frozen=True)
class Picks:
    """`index`: pool rows in pick order; `score`: each pick's score (see the strategy)."""

    index: np.ndarray
    score: np.ndarray


def margins(probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Top-1 minus top-2 probability per row (1 - top-1 when there is one class); with multi-label
    `thresholds`, the distance of the label nearest its threshold."""
    probs = np.asarray(probs, dtype=np.float64)
    if thresholds is not None:
        return np.abs(probs - np.asarray(thresholds, dtype=np.float64)[None, :]).min(axis=1)
    if probs.shape[1] < 2:
        return 1.0 - probs[:, 0]
    top = -np.partition(-probs, 1, axis=1)[:, :2]
    return top[:, 0] - top[:, 1]


def entropies(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Predictive entropy per row, in nats (0 log 0 = 0); `multi_label`: the sum of the labels' binary
    entropies (each sigmoid is its own yes/no)."""
    probs = np.asarray(probs, dtype=np.float64)
    plogp = lambda q: q * np.log(np.where(q > 0, q, 1.0))  # noqa: E731
    if multi_label:
        return -(plogp(probs) + plogp(1.0 - probs)).sum(axis=1)
    return -plogp(probs).sum(axis=1)


def gradient_factors(probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """a = one-hot(argmax p) - p per row: the gradient embedding is a (x) x (BADGE); with multi-label
    `thresholds`, a = 1[p >= t] - p (the binary cross-entropy gradient at the predicted set)."""
    probs = np.asarray(probs, dtype=np.float64)
    if thresholds is not None:
        return (probs >= np.asarray(thresholds, dtype=np.float64)[None, :]).astype(np.float64) - probs
    factors = -probs.copy()
    factors[np.arange(len(probs)), probs.argmax(axis=1)] += 1.0
    return factors


def margin(pool: Pool, budget: int, rng: np.random.Generator) -> Picks:
    scores = margins(pool.probs, pool.thresholds)
    order = np.argsort(scores, kind="stable")[:budget]
    return Picks(order, scores[order])


def entropy(pool: Pool, budget: int, rng: np.random.Generator) -> Picks:
    scores = entropies(pool.probs, multi_label=pool.thresholds is not None)
    order = np.argsort(-scores, kind="stable")[:budget]
    return Picks(order, scores[order])


def random(pool: Pool, budget: int, rng: np.random.Generator) -> Picks:
    order = rng.permutation(len(pool))[:budget]
    return Picks(order, np.full(len(order), np.nan))


def badge(pool: Pool, budget: int, rng: np.random.Generator) -> Picks:
    """k-means++ seeding on gradient embeddings, with their distances factored (module docstring)."""
    a, x = gradient_factors(pool.probs, pool.thresholds), np.asarray(pool.embeddings, dtype=np.float64)
    a_sq, x_sq = (a * a).sum(axis=1), (x * x).sum(axis=1)
    norms_sq = a_sq * x_sq
    picked = [int(np.argmax(norms_sq))]
    nearest = np.full(len(pool), np.inf)
    while len(picked) < budget:
        c = picked[-1]
        d2 = norms_sq + norms_sq[c] - 2.0 * (a @ a[c]) * (x @ x[c])
        nearest = np.minimum(nearest, np.maximum(d2, 0.0))
        nearest[picked] = 0.0
        total = nearest.sum()
        if total > 0:
            picked.append(int(rng.choice(len(pool), p=nearest / total)))
        else:  # every row left is a copy of a pick (e.g. all certain): no D^2 mass, draw uniformly
            left = np.setdiff1d(np.arange(len(pool)), picked)
            picked.append(int(rng.choice(left)))
    index = np.asarray(picked, dtype=np.int64)
    return Picks(index, np.sqrt(norms_sq[index]))


def _distance_to_nearest(x: np.ndarray, centres: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance of each row of x to its nearest centre (centres in chunks: bounded memory)."""
    nearest = np.full(len(x), np.inf)
    x_sq = (x * x).sum(axis=1)
    for start in range(0, len(centres), chunk):
        c = centres[start:start + chunk]
        d2 = x_sq[:, None] + (c * c).sum(axis=1)[None, :] - 2.0 * x @ c.T
        nearest = np.minimum(nearest, np.maximum(d2, 0.0).min(axis=1))
    return np.sqrt(nearest)


def coreset(pool: Pool, budget: int, rng: np.random.Generator) -> Picks:
    """Greedy k-center: the labelled texts are the first centres (module docstring)."""
    x = np.asarray(pool.embeddings, dtype=np.float64)
    labelled = None if pool.labelled is None else np.asarray(pool.labelled, dtype=np.float64).reshape(-1, x.shape[1])
    picked, scores = [], []
    if labelled is not None and len(labelled):
        nearest = _distance_to_nearest(x, labelled)
    else:
        first = int(rng.integers(len(x)))
        picked, scores = [first], [np.nan]
        nearest = _distance_to_nearest(x, x[[first]])
    while len(picked) < budget:
        nearest[picked] = -1.0  # never again, even when every distance left is 0 (duplicates)
        c = int(np.argmax(nearest))
        picked.append(c)
        scores.append(float(nearest[c]))
        nearest = np.minimum(nearest, _distance_to_nearest(x, x[[c]]))
    return Picks(np.asarray(picked, dtype=np.int64), np.asarray(scores, dtype=np.float64))


@dataclass(frozen=True)
class Strategy:
    """A strategy and what it needs from the model: `needs_embeddings` (badge, coreset)."""

    choose: Callable[[Pool, int, np.random.Generator], Picks]
    needs_embeddings: bool
    score: str  # what the score means, for sheets and docs


STRATEGIES = {
    "margin": Strategy(margin, False, "top-1 minus top-2 probability (smaller: more ambiguous)"),
    "entropy": Strategy(entropy, False, "predictive entropy in nats (larger: more uncertain)"),
    "badge": Strategy(badge, True, "gradient-embedding norm (larger: more to learn), picks spread by k-means++"),
    "coreset": Strategy(coreset, True, "distance to the nearest labelled or picked text (larger: less covered)"),
    "random": Strategy(random, False, "none (uniform sample)"),
}


def strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise UserError(f"budget must be a whole number of texts, at least 1; got {budget!r}")
    return int(budget)


def select(name: str, pool: Pool, budget: int, rng: np.random.Generator) -> Picks:
    """`budget` rows of `pool` by strategy `name` (see the module docstring)."""
    chosen, budget = strategy(name), check_budget(budget)
    probs = np.asarray(pool.probs)
    if probs.ndim != 2 or len(probs) == 0:
        raise UserError("no candidates to choose from: the pool is empty")
    if pool.thresholds is not None and np.shape(pool.thresholds) != (probs.shape[1],):
        raise UserError(f"one threshold per label: {probs.shape[1]} labels, thresholds {np.shape(pool.thresholds)}")
    if chosen.needs_embeddings and (pool.embeddings is None or len(pool.embeddings) != len(probs)):
        raise UserError(f"strategy '{name}' needs one embedding per candidate")
    return chosen.choose(pool, min(budget, len(probs)), rng)
