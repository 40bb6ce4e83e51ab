"""Collaborative baselines: most-popular, item-kNN (cosine on the sparse user-item matrix) and
EASE (Steck 2019), plus `choose_on_validation`, the hyper-parameter search every tuned model uses.

Every recommender here, in `factorization` and in `content` has the same shape: `fit(split)`
learns from the training positives of a `RankingSplit`, then `score(histories)` returns a dense
[len(histories), n_items] score matrix in catalog order for histories given as lists of
(item id, timestamp), oldest first. A history can be a known user's training positives or a
list of recent items sent to the service. None of these baselines can score an item without
training interactions (cold start): most-popular and item-kNN give it 0 (their scores are never
negative); EASE, ALS and BPR, whose scores can be negative, put it below every item with
interactions (`rank_cold_last`), so a cold item never enters a list by a tie at 0.
EASE is written here (a dozen lines of numpy) because no maintained library ships it for
sparse CSR input; its closed form is the reference the paper gives.
Leaves out: ranking and exclusions (protocol.rank_items), text (content), matrix factorisation
(factorization).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from core.foundation.errors import UserError
from solutions.recsys.protocol import RankingSplit, evaluate_scores, validation_split

History = list[tuple[str, float]]


def user_item_matrix(histories: list[History], item_index: dict[str, int], n_items: int) -> sp.csr_matrix:
    """Binary [users, items] CSR; unknown items are ignored, repeats count once."""
    rows, cols = [], []
    for r, history in enumerate(histories):
        for c in {item_index[item] for item, _ in history if item in item_index}:
            rows.append(r)
            cols.append(c)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(histories), n_items))


class MostPopular:
    """Score = number of users with the item among their training positives."""

    name = "most-popular"

    def fit(self, split: RankingSplit) -> "MostPopular":
        self.items = split.items
        matrix = user_item_matrix([split.history(u) for u in split.train], split.item_index, len(split.items))
        self.counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        return self

    def score(self, histories: list[History]) -> np.ndarray:
        return np.tile(self.counts, (len(histories), 1))


class ItemKNN:
    """Item-based kNN: cosine between item columns of the binary user-item matrix, each item
    keeping its `neighbours` most similar items; a user's score for item j is the sum of j's
    similarities to the items in the history (Sarwar et al. 2001, Deshpande & Karypis 2004)."""

    name = "item-kNN"

    def __init__(self, neighbours: int = 100, block: int = 1024):
        self.neighbours, self.block = neighbours, block

    def fit(self, split: RankingSplit) -> "ItemKNN":
        self.items, self.item_index = split.items, split.item_index
        matrix = user_item_matrix([split.history(u) for u in split.train], self.item_index, len(self.items))
        self.similarity = top_k_cosine(matrix, self.neighbours, self.block)
        return self

    def score(self, histories: list[History]) -> np.ndarray:
        users = user_item_matrix(histories, self.item_index, len(self.items))
        return np.asarray((users @ self.similarity).todense(), dtype=np.float32)


def top_k_cosine(matrix: sp.csr_matrix, neighbours: int, block: int = 1024) -> sp.csr_matrix:
    """[items, items] sparse cosine similarity between the columns of `matrix`, self-similarity
    removed, keeping each row's `neighbours` largest positive entries. Computed a block of items
    at a time so memory stays at block x items."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
    normed = sp.csr_matrix(matrix @ sp.diags(1.0 / np.maximum(norms, 1e-12)))
    columns = normed.T.tocsr()
    n = matrix.shape[1]
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        sims = np.asarray((columns[start:start + block] @ normed).todense())
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = 0.0
        keep = min(neighbours, n - 1) if n > 1 else 0
        if keep == 0:
            continue
        top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
        for r, cand in enumerate(top):
            good = cand[sims[r, cand] > 0]
            rows.extend([start + r] * len(good))
            cols.extend(good.tolist())
            vals.extend(sims[r, good].tolist())
    return sp.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(n, n))


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck 2019): an item-item weight matrix B with zero
    diagonal minimising ||X - XB||² + λ||B||², in closed form: P = (XᵀX + λI)⁻¹,
    B = I - P / diag(P) (column j divided by P_jj), diag(B) = 0. Score = history row @ B.

    Only items with a training positive enter the solve (the rest have a zero row and column in
    XᵀX, so their weights are exactly 0: the same B, smaller). Memory for n such items: the Gram
    matrix is inverted in place in float64 (8·n² bytes), then B is kept in float32 (4·n² bytes):
    about 12·n² bytes at the peak, e.g. 1.1 GB for 9,742 items, 4.8 GB for 20,000, 120 GB for
    100,000. Above `max_items` (default 20,000) `fit` refuses with a UserError instead of
    swapping; time grows as n³ (the inverse). λ: `choose_on_validation` over `LAMBDAS`."""

    name = "EASE"
    LAMBDAS = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)

    def __init__(self, l2: float = 100.0, max_items: int = 20_000):
        if l2 <= 0:
            raise UserError(f"EASE l2={l2}: the regulariser must be > 0 (e.g. 100)")
        self.l2, self.max_items = l2, max_items

    def fit(self, split: RankingSplit) -> "EASE":
        self.items, self.item_index = split.items, split.item_index
        matrix = user_item_matrix([split.history(u) for u in split.train], self.item_index, len(self.items))
        self.active = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
        n = len(self.active)
        if n > self.max_items:
            raise UserError(f"EASE: {n:,} items with interactions exceed max_items={self.max_items:,} "
                            f"(a dense {n:,}x{n:,} solve needs about {12 * n * n / 2**30:.1f} GiB); raise "
                            f"max_items if the machine has the memory, or use als/itemknn for this catalog")
        self.weights = ease_weights(matrix[:, self.active], self.l2)
        return self

    def score(self, histories: list[History]) -> np.ndarray:
        users = user_item_matrix(histories, self.item_index, len(self.items))[:, self.active]
        out = np.zeros((len(histories), len(self.items)), dtype=np.float32)
        out[:, self.active] = users @ self.weights
        return rank_cold_last(out, self.active)


def rank_cold_last(scores: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """`scores` [users, items] with the columns not in `warm` (item indices with training
    positives) set to each row's minimum over the warm columns minus 1 (in place; returned)."""
    cold = np.ones(scores.shape[1], dtype=bool)
    cold[warm] = False
    if cold.any() and not cold.all():
        scores[:, cold] = scores[:, ~cold].min(axis=1, keepdims=True) - 1.0
    return scores


def ease_weights(matrix: sp.csr_matrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix for a [users, items] matrix: float64 solve, float32 result."""
    gram = np.asarray((matrix.T @ matrix).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    del gram
    precision /= -np.diag(precision).copy()  # column j divided by -P_jj
    precision[np.diag_indices_from(precision)] = 0.0
    return np.ascontiguousarray(precision, dtype=np.float32)  # LAPACK hands back Fortran order; C keeps scoring copy-free


def choose_on_validation(build: Callable[..., object], grid: list[dict], split: RankingSplit,
                         metric: str = "ndcg@10") -> tuple[dict, list[dict]]:
    """Fit `build(**params)` for each params in `grid` on the validation cut of `split`
    (protocol.validation_split: the training histories cut again in time) and score it there;
    the test windows are never read. Returns (best params, [{"params", metric}...] in grid
    order); ties go to the earlier grid entry, so list cheaper settings first."""
    validation = validation_split(split)
    users = validation.eval_users()
    if not users:
        raise UserError("no user has both a training positive and a later one to validate on: "
                        "the data is too small to choose hyper-parameters (pass them explicitly)")
    results = []
    for params in grid:
        model = build(**params).fit(validation)
        value = evaluate_scores(lambda us: model.score([validation.history(u) for u in us]), validation,
                                users=users)[metric]
        results.append({"params": dict(params), metric: value})
    best = max(range(len(grid)), key=lambda i: (results[i][metric], -i))
    return dict(grid[best]), results
