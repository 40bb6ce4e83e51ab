"""What an item index search returns, and which hits a metadata filter keeps.

- `Hits`: one row per query, `ids` (external item ids; None past the last hit) and `scores`
  (float32 cosines; -inf past the last hit). `padded_hits` fills a short result up to k that way.
- `matches(meta, where)`: the metadata filter (`{"category": "toys"}`, or a value contained in a
  list field such as genres), case-insensitive for strings.
Leaves out: the search itself and the over-fetching that feeds the filter (solutions.recsys.index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hits:
    """Search results, one row per query: `ids` (object array, None past the last hit) and
    `scores` (float32, cosine for normalised vectors; -inf past the last hit)."""

    ids: np.ndarray
    scores: np.ndarray

    def row(self, i: int) -> list[tuple[str, float]]:
        return [(str(d), float(s)) for d, s in zip(self.ids[i], self.scores[i]) if d is not None]


def padded_hits(ids: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """Hits with k columns: missing ones (and any None id) get None and -inf."""
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.concatenate([ids, np.full((len(ids), pad), None, dtype=object)], axis=1)
        scores = np.concatenate([scores, np.full((len(scores), pad), -np.inf, dtype=np.float32)], axis=1)
    return Hits(ids, np.where(ids == None, -np.inf, scores).astype(np.float32))  # noqa: E711


def matches(meta: dict | None, where: dict | None) -> bool:
    """A metadata filter: every key must equal the item's value, or be contained in it if the
    item's value is a list (genres). Comparison is case-insensitive for strings."""
    if not where:
        return True
    meta = meta or {}
    for key, wanted in where.items():
        have = meta.get(key)
        values = have if isinstance(have, (list, tuple, set)) else [have]
        norm = {str(v).lower() for v in values if v is not None}
        if str(wanted).lower() not in norm:
            return False
    return True
