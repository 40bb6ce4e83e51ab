"""Collaborative baselines: most-popular and item-kNN (cosine on the sparse user-item matrix).

Every recommender here and in `content` has the same shape: `fit(split)` learns from the
training positives of a `RankingSplit`, then `score(histories)` returns a dense
[len(histories), n_items] score matrix in catalog order for histories given as lists of
(item id, timestamp), oldest first. A history can be a known user's training positives or a
list of recent items sent to the service. Neither baseline can score an item without training
interactions (cold start): its score is 0.
Leaves out: ranking and exclusions (protocol.rank_items), text (content).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from solutions.recsys.protocol import RankingSplit

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
