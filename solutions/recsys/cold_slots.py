"""Reserved slots for cold items: in every recommendation list a few positions hold the best cold items for
this user, ranked among the cold items only; the other positions hold the model's ranking of the warm items.

What.
- Cold items: the items the model has no learned vector for (a factor index: not among the factor model's
  learned items, which includes every item added later with POST /v1/items); warm: the others. A cold
  item's vector is the text map's (solutions.recsys.cold), so both rankings are by user . vector.
- `merge_slots(warm, cold, k, start, slots)`: THE one function that makes the list, offline (the validation
  curve, `rank_with_slots`, `slot_scorer`) and served (`ColdSlots.recommend`, used by
  solutions.recsys.live.Recommender), so the served list is the list the policy was chosen on. Reserved
  positions are start..start+slots-1 (1-based, clipped to k): a list shorter than `start` gets no cold item.
  A reserved position with no cold item left takes the next warm one and vice versa (a filter can empty
  either side); an item never appears twice.
- The choice (`choose_policy`): every (start, slots) of STARTS x SLOT_COUNTS and every exposure of the scale
  policy (cold.EXPOSURES) are scored on the pseudo-cold validation cut exactly as `cold.choose_exposure`
  scores exposures (NDCG@10 and Recall@20 over all items, the pseudo-cold items' Recall@20; the test windows
  are never read); `pick_policy` takes the best pseudo-cold Recall@20 among the candidates whose NDCG@10 is
  at least (1 - max_metric_loss) x the NDCG@10 without cold items; ties go to the least intrusive (fewer
  slots, later start, smaller exposure; the model alone first).
- The cost NDCG@10 does not see: slots after position 10 leave NDCG@10 exactly unchanged (positions 1-10
  are the model's), so even a budget of 0 allows them, but each one pushes a warm item out of the top 20:
  that costs Recall@20 on warm items. Every curve point records Recall@20 over all items, and the summary
  (`ColdItems.summary`, printed by `verticals recsys index --cold-items`) states both changes.
- Serving (`ColdSlots`): two parts over the same index: the warm part is one index search excluding the
  cold ids; the cold part is scored with NumPy against the cold items' index vectors, kept in a small
  cache (id -> vector) that add/update/remove keep current (ItemIndex has no cheap search restricted to a
  set of ids). `exclude_seen` and `where` filters apply to both parts. The policy is saved in
  cold_map.json (`slots`: [start, slots]); an index saved without it serves the scale policy as before.
- Generic over models: everything reads `cold.Collaborative` or a set of learned ids; ALS and BPR are
  wired (solutions.recsys.factors_index), any model with item vectors and a user query vector can be.
Why: one global scale cannot place cold items against each user's warm scores without pushing relevant warm
items out of the top 10, while among cold items alone the map ranks well (ml-latest-small: cold Recall@20
0.0003-0.0010 with the scale policy within a 2% NDCG budget, 0.11 when only cold items are ranked).
Leaves out: the map itself and the scale policy (solutions.recsys.cold), per-user or per-request slot counts,
and the scores of a merged list being monotone (each part keeps its own cosine scores).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from core.foundation.errors import UserError
from solutions.recsys.cold import (
    EXPOSURES,
    MAP_META,
    MAX_METRIC_LOSS,
    ColdItems,
    Collaborative,
    PseudoCold,
    TextToVectors,
    check_budget,
    curve_point,
    cut_report,
    exposure_curve,
    finite_matrix,
    pseudo_cold,
)
from solutions.recsys.hits import matches
from solutions.recsys.index import ItemIndex, normalize
from solutions.recsys.protocol import RankingSplit

STARTS = (1, 4, 8, 11, 16)  # 1-based first reserved position
SLOT_COUNTS = (1, 2, 3, 5, 8, 10)  # 0 slots = the model alone, the exposure-0 point of the curve
DEPTH = 100  # offline lists as long as protocol.evaluate_scores ranks (its MRR reads the top 100)


def check_slots(start: int, slots: int) -> None:
    if int(start) < 1 or int(slots) < 0:
        raise UserError(f"cold slots start={start}, slots={slots}: give a 1-based start >= 1 and slots >= 0")


def merge_slots(warm: Iterable, cold: Iterable, k: int, start: int, slots: int,
                key: Callable | None = None) -> list:
    """The list of `k` items: positions start..start+slots-1 (1-based) from `cold` in order, the others from
    `warm` in order; a side that runs out is filled from the other; an item (by `key`) appears once."""
    check_slots(start, slots)
    warm_left, cold_left, used, out = iter(warm), iter(cold), set(), []

    def take(first, second):
        for source in (first, second):
            for item in source:
                name = key(item) if key else item
                if name not in used:
                    used.add(name)
                    return item
        return None

    for position in range(1, k + 1):
        reserved = start <= position < start + slots
        item = take(cold_left, warm_left) if reserved else take(warm_left, cold_left)
        if item is None:
            break
        out.append(item)
    return out


def top_order(scores: np.ndarray, skip: np.ndarray, depth: int) -> np.ndarray:
    """Column indices of the `depth` best finite scores of one row, `skip` columns left out; ties: column order."""
    s = np.array(scores, dtype=np.float64, copy=True)
    s[skip] = -np.inf
    depth = min(depth, len(s))
    cand = np.argpartition(-s, depth - 1)[:depth] if depth < len(s) else np.arange(len(s))
    cand = cand[np.isfinite(s[cand])]
    return cand[np.lexsort((cand, -s[cand]))]


def ranked_parts(warm_scores: np.ndarray, cold_scores: np.ndarray, is_cold: np.ndarray, seen: Sequence[np.ndarray],
                 depth: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per user row: the warm items' order (cold columns out) and the cold items' order (warm columns out)."""
    warm_cols, cold_cols = np.flatnonzero(~is_cold), np.flatnonzero(is_cold)
    warm = [top_order(row, np.concatenate([cold_cols, skip]).astype(np.int64), depth)
            for row, skip in zip(warm_scores, seen)]
    cold = [top_order(row, np.concatenate([warm_cols, skip]).astype(np.int64), depth)
            for row, skip in zip(cold_scores, seen)]
    return warm, cold


def rank_with_slots(user_vectors, item_vectors, mapped, is_cold, seen: Sequence[np.ndarray], k: int, start: int,
                    slots: int) -> list[list[int]]:
    """The policy's offline lists (catalog indices), per user: warm items by user . item_vectors, cold items by
    user . mapped, merged by `merge_slots`; `seen[u]`: the columns user u is not shown."""
    users = np.asarray(user_vectors, dtype=np.float64)
    warm, cold = ranked_parts(users @ np.asarray(item_vectors, dtype=np.float64).T,
                              users @ np.asarray(mapped, dtype=np.float64).T, np.asarray(is_cold, dtype=bool), seen, k)
    return [merge_slots(w.tolist(), c.tolist(), k, start, slots) for w, c in zip(warm, cold)]


def as_scores(lists: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    """[users, n_items] scores that rank each list in order; items not in a list get -inf (not ranked)."""
    scores = np.full((len(lists), n_items), -np.inf)
    for row, ranked in enumerate(lists):
        scores[row, list(ranked)] = np.arange(len(ranked), 0, -1, dtype=np.float64)
    return scores


def slot_scorer(model: Collaborative, mapped, split: RankingSplit, start: int, slots: int,
                depth: int = DEPTH) -> Callable[[list[str]], np.ndarray]:
    """`score_users` for protocol.evaluate_scores that ranks like the served policy (for tests and benchmarks):
    `mapped` [catalog items, dim] holds every item's mapped vector, `model.active` the learned items."""
    is_cold = np.ones(len(split.items), dtype=bool)
    is_cold[model.active] = False
    column = split.item_index

    def score(users: list[str]) -> np.ndarray:
        seen = [np.array([column[i] for i in split.seen(u) if i in column], dtype=np.int64) for u in users]
        lists = rank_with_slots(model.user_vectors([split.history(u) for u in users]), model.item_vectors, mapped,
                                is_cold, seen, depth, start, slots)
        return as_scores(lists, len(split.items))

    return score


def slot_curve(cut: PseudoCold, pairs: Sequence[tuple[int, int]], depth: int = DEPTH) -> list[dict]:
    """Per (start, slots): the validation scores of the merged lists (`cold.curve_point`)."""
    column = cut.everything.item_index
    seen = [np.array([column[i] for i in cut.everything.seen(u) if i in column], dtype=np.int64) for u in cut.users]
    warm, cold = ranked_parts(cut.warm_scores, cut.cold_scores, cut.is_cold, seen, depth)
    warm, cold = [w.tolist() for w in warm], [c.tolist() for c in cold]
    curve = []
    for start, slots in pairs:
        lists = [merge_slots(w, c, depth, start, slots) for w, c in zip(warm, cold)]

        def pick(chunk: list[str], lists=lists) -> np.ndarray:
            return as_scores([lists[r] for r in cut.rows(chunk)], len(cut.is_cold))

        curve.append(curve_point(cut, pick, start=int(start), slots=int(slots)))
    return curve


def pick_policy(curve: list[dict], max_metric_loss: float = MAX_METRIC_LOSS,
                max_recall_loss: float | None = None) -> dict:
    """The curve point with the best cold Recall@20 among those whose NDCG@10 is at least (1 - max_metric_loss)
    x the NDCG@10 without cold items (exposure 0, which always qualifies) and, with `max_recall_loss`, whose
    Recall@20 over all items is at least (1 - max_recall_loss) x that of exposure 0 (slots past position 10
    cost Recall@20, which NDCG@10 does not see); ties: the least intrusive."""
    check_budget(max_metric_loss)
    if max_recall_loss is not None:
        check_budget(max_recall_loss)
    base = [point for point in curve if point.get("exposure") == 0.0]
    if not base:
        raise UserError("the policy curve has no point at exposure 0 (the model without cold items)")
    floor = (1.0 - max_metric_loss) * base[0]["ndcg@10"]
    recall_floor = -1.0 if max_recall_loss is None else (1.0 - max_recall_loss) * base[0].get("recall@20", 0.0)
    feasible = [point for point in curve if point["ndcg@10"] >= floor and point.get("recall@20", 0.0) >= recall_floor]
    return max(feasible, key=lambda p: (p["cold_recall@20"], -p.get("slots", 0), p.get("start", 0),
                                        -p.get("exposure", 0.0)))


def choose_policy(fit: Callable[[RankingSplit], Collaborative], split: RankingSplit, text_vectors, *,
                  max_metric_loss: float = MAX_METRIC_LOSS, exposures: tuple[float, ...] = EXPOSURES,
                  starts: tuple[int, ...] = STARTS, slot_counts: tuple[int, ...] = SLOT_COUNTS,
                  cold_fraction: float = 0.1, seed: int = 0, max_users: int = 5000,
                  max_recall_loss: float | None = None) -> tuple[dict, dict]:
    """The exposure policy for cold items chosen on `split`'s validation cut (module docstring): returns the
    chosen curve point ({"start", "slots"} or {"exposure"} with its scores) and the report with the curve."""
    check_budget(max_metric_loss)
    cut = pseudo_cold(fit, split, text_vectors, cold_fraction=cold_fraction, seed=seed, max_users=max_users)
    curve = exposure_curve(cut, tuple(sorted({0.0, *map(float, exposures)})))
    curve += slot_curve(cut, [(s, n) for s in starts for n in slot_counts if n > 0])
    chosen = pick_policy(curve, max_metric_loss, max_recall_loss)
    return chosen, {"chosen": chosen, "max_recall_loss": max_recall_loss,
                    **cut_report(cut, curve, max_metric_loss, cold_fraction, seed)}


def fit_cold_items(fit: Callable[[RankingSplit], Collaborative], fitted: Collaborative, split: RankingSplit,
                   text_vectors, *, encoder: str, max_length: int, max_metric_loss: float = MAX_METRIC_LOSS,
                   seed: int = 0, slots: bool = True, max_recall_loss: float | None = None) -> ColdItems:
    """The policy chosen on `split`'s validation cut (`choose_policy`, refitting with `fit`; `slots=False`: the
    scale policy only) and the map fitted on `fitted`, the model fitted on the whole of `split`."""
    chosen, report = choose_policy(fit, split, text_vectors, max_metric_loss=max_metric_loss, seed=seed,
                                   max_recall_loss=max_recall_loss, **({} if slots else {"starts": ()}))
    text_vectors = finite_matrix("text vectors", text_vectors)
    mapping = TextToVectors.fit(text_vectors[fitted.active], np.asarray(fitted.item_vectors)[fitted.active])
    if chosen.get("slots"):  # reserved positions: the cold items' own ranking, unscaled
        place, exposure = (chosen["start"], chosen["slots"]), 1.0
    else:
        place, exposure = None, float(chosen["exposure"])
    report["exposure"] = exposure
    return ColdItems(mapping, exposure, str(encoder), int(max_length), text_vectors, report, place)


def load_slots(directory: str | Path) -> tuple[int, int] | None:
    """(start, slots) saved in an index's cold_map.json; None for the scale policy (or an older index)."""
    path = Path(directory) / MAP_META
    place = json.loads(path.read_text()).get("slots") if path.is_file() else None
    if not place:
        return None
    start, slots = (int(v) for v in place)
    check_slots(start, slots)
    return start, slots


class ColdSlots:
    """The served policy: `recommend` merges one index search over the warm items with the cold items' own
    ranking (NumPy over their cached index vectors); `changed(index, id)` keeps the cache current."""

    def __init__(self, start: int, slots: int, learned: set[str]):
        check_slots(start, slots)
        self.start, self.slots, self.learned = int(start), int(slots), set(learned)
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] | None = None  # cold id -> its index vector; built at first use
        self._stacked: tuple[list[str], np.ndarray] | None = None

    def changed(self, index: ItemIndex, item_id: str) -> None:
        """After an add, update or remove of `item_id` in `index`."""
        with self._lock:
            if self._vectors is None:
                return
            if item_id in index and item_id not in self.learned:
                self._vectors[item_id] = np.asarray(index.vector(item_id), dtype=np.float32)
            else:
                self._vectors.pop(item_id, None)
            self._stacked = None

    def cold_items(self, index: ItemIndex) -> tuple[list[str], np.ndarray]:
        """The cold ids and their index vectors [n, dim] (a snapshot)."""
        with self._lock:
            if self._vectors is None:
                self._vectors = {i: np.asarray(index.vector(i), dtype=np.float32) for i in index.ids
                                 if i not in self.learned}
            if self._stacked is None:
                ids = list(self._vectors)
                matrix = np.stack([self._vectors[i] for i in ids]) if ids else np.zeros((0, index.dim), np.float32)
                self._stacked = ids, matrix
            return self._stacked

    def recommend(self, index: ItemIndex, query: np.ndarray, k: int, exclude: set[str] | None,
                  where: dict | None) -> list[tuple[str, float]]:
        """(id, score) of the merged list for one query vector [1, dim]; `exclude` and `where` apply to both parts."""
        ids, vectors = self.cold_items(index)
        skip = set(exclude or ())
        warm = index.search(query, k, exclude=skip | set(ids), where=where).row(0)
        scores = vectors @ normalize(query)[0] if len(ids) else np.zeros(0, np.float32)
        cold = []
        for row in np.lexsort((np.arange(len(ids)), -scores)):
            item = ids[row]
            if item in skip or (where and not matches(index.metadata.get(item), where)):
                continue
            cold.append((item, float(scores[row])))
            if len(cold) == k:
                break
        return merge_slots(warm, cold, k, self.start, self.slots, key=lambda hit: hit[0])
