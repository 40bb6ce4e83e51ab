"""The evaluation protocol: a temporal leave-latest-out split per user and pure ranking metrics.

Split (`temporal_split`). Each user's interactions are ordered by (timestamp, file order); the
latest `test_fraction` of them (at least one, rounded up) form the user's test window, the rest
the training history. The cut is per user and in time, so no model sees a user's future. Users
with fewer than `min_interactions` interactions stay entirely in training.

Positives. An interaction is a positive when its rating is >= `threshold` (MovieLens: 3.5 on the
0.5-5 star scale, i.e. "liked"); interactions without a rating (implicit feedback, e.g. views or
purchases in your own CSV) are all positives. Models learn only from training positives; a
user's test relevant set is the positives in the test window, minus anything already in the
user's training history.

Ranking (`rank_items`). Full ranking over every catalog item, with each user's training items
(all of them, liked or not: the user has seen them) excluded. Users without a test positive or
without a training positive are not evaluated (no relevant item, or nothing to personalise from).
Ties in scores are broken by item order in the catalog (stable sort), so results are
deterministic.

Metrics are pure functions of a ranked list and a relevant set. Leaves out: models (baselines,
content) and any I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solutions.recsys.data import Interaction, InteractionData, load_recipe_data

MOVIELENS_THRESHOLD = 3.5


# ---------------------------------------------------------------- metrics (pure)

def recall_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """|top-k ∩ relevant| / |relevant|. Convention: the denominator is |relevant| even when it
    exceeds k (so a user with 30 relevant items can reach at most k/30); 0.0 if nothing is relevant."""
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def ndcg_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """Binary-gain NDCG: sum over hits at rank r (1-based) of 1/log2(r+1), divided by the ideal
    DCG of min(|relevant|, k) hits at the top. 0.0 if nothing is relevant."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / ideal


def mrr(ranked: list[str], relevant: set[str]) -> float:
    """Reciprocal rank of the first relevant item in the full ranked list; 0.0 if none appears."""
    for r, item in enumerate(ranked):
        if item in relevant:
            return 1.0 / (r + 1)
    return 0.0


def catalog_coverage(recommended: list[list[str]], catalog_size: int, k: int) -> float:
    """Share of the catalog that appears in at least one user's top-k list."""
    if catalog_size == 0:
        return 0.0
    return len({item for ranked in recommended for item in ranked[:k]}) / catalog_size


def ranking_metrics(ranked_lists: list[list[str]], relevant_sets: list[set[str]], catalog_size: int) -> dict:
    """Means over users of recall@10, recall@20, ndcg@10 and mrr, plus catalog coverage@10.
    Keys are built from the function names so labels cannot be swapped by hand."""
    out = {"users": len(ranked_lists)}
    for fn, k in ((recall_at_k, 10), (recall_at_k, 20), (ndcg_at_k, 10)):
        out[f"{fn.__name__.removesuffix('_at_k')}@{k}"] = float(np.mean(
            [fn(r, rel, k) for r, rel in zip(ranked_lists, relevant_sets)])) if ranked_lists else 0.0
    out[mrr.__name__] = float(np.mean([mrr(r, rel) for r, rel in zip(ranked_lists, relevant_sets)])) if ranked_lists else 0.0
    out["coverage@10"] = catalog_coverage(ranked_lists, catalog_size, 10)
    return out


# ---------------------------------------------------------------- split

def is_positive(event: Interaction, threshold: float | None) -> bool:
    return event.rating is None or threshold is None or event.rating >= threshold


@dataclass(frozen=True)
class RankingSplit:
    """Training histories and test windows over one item catalog (see the module docstring)."""

    items: list[str]  # the catalog; index = item column in score matrices
    train: dict[str, list[Interaction]]  # user -> training interactions, oldest first
    test: dict[str, list[Interaction]]  # user -> test window, oldest first
    threshold: float | None
    targets: frozenset[str] | None = None  # if set, only these items count as relevant (cold start)

    @property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items)}

    def history(self, user: str) -> list[tuple[str, float]]:
        """The user's training positives as (item, timestamp), oldest first."""
        return [(e.item, e.timestamp) for e in self.train.get(user, []) if is_positive(e, self.threshold)]

    def seen(self, user: str) -> set[str]:
        return {e.item for e in self.train.get(user, [])}

    def relevant(self, user: str) -> set[str]:
        seen = self.seen(user)
        return {e.item for e in self.test.get(user, []) if is_positive(e, self.threshold)
                and e.item not in seen and (self.targets is None or e.item in self.targets)}

    def eval_users(self) -> list[str]:
        """Users with at least one relevant test item and one training positive, sorted."""
        return sorted(u for u in self.test if self.relevant(u) and self.history(u))

    def training_interactions(self) -> list[Interaction]:
        return [e for events in self.train.values() for e in events]


def _by_user(events: list[Interaction]) -> dict[str, list[Interaction]]:
    users: dict[str, list[Interaction]] = {}
    for order, event in enumerate(events):
        users.setdefault(event.user, []).append((event.timestamp, order, event))
    return {u: [e for _, _, e in sorted(rows, key=lambda r: (r[0], r[1]))] for u, rows in users.items()}


def temporal_split(events: list[Interaction], items: list[str], *, test_fraction: float = 0.2,
                   min_interactions: int = 5, threshold: float | None = None) -> RankingSplit:
    """Per user, the latest ceil(test_fraction * n) interactions are the test window."""
    train, test = {}, {}
    for user, rows in _by_user(events).items():
        if len(rows) < min_interactions:
            train[user] = rows
            continue
        n_test = max(1, math.ceil(test_fraction * len(rows)))
        train[user], test[user] = rows[:-n_test], rows[-n_test:]
    return RankingSplit(list(items), train, test, threshold)


def validation_split(split: RankingSplit, test_fraction: float = 0.2, min_interactions: int = 5) -> RankingSplit:
    """The same temporal cut applied to the training histories: for choosing hyper-parameters
    without touching the test windows."""
    return temporal_split(split.training_interactions(), split.items, test_fraction=test_fraction,
                          min_interactions=min_interactions, threshold=split.threshold)


def split_dataset(data: InteractionData, *, threshold: float | None = None, test_fraction: float = 0.2,
                  min_interactions: int = 5) -> RankingSplit:
    """`temporal_split` over a loaded dataset; `threshold=None` means: MovieLens 3.5, else every
    interaction is a positive (pass a number to binarise your own ratings)."""
    if threshold is None and data.name.startswith("movielens"):
        threshold = MOVIELENS_THRESHOLD
    return temporal_split(data.interactions, sorted(data.items), test_fraction=test_fraction,
                          min_interactions=min_interactions, threshold=threshold)


def training_split(data: InteractionData, *, threshold: float | None = None) -> RankingSplit:
    """Every interaction as training, no test window: what a served model learns from (its
    hyper-parameters are chosen on this split's validation cut)."""
    return split_dataset(data, threshold=threshold, test_fraction=0.0, min_interactions=10**9)


def recipe_training_split(section, data_dir: str | None) -> tuple[InteractionData, RankingSplit]:
    """A recsys recipe's `data:` section loaded (data.load_recipe_data) and every interaction as training
    (`training_split`), with the section's threshold (< 0: the catalog's default)."""
    data = load_recipe_data(section, data_dir)
    return data, training_split(data, threshold=section.threshold if section.threshold >= 0 else None)


def cold_start_split(split: RankingSplit, held: set[str]) -> RankingSplit:
    """The split with every training interaction on `held` items removed and only `held` items
    counting as relevant: no model has seen them, so collaborative models cannot rank them."""
    train = {u: [e for e in events if e.item not in held] for u, events in split.train.items()}
    return RankingSplit(split.items, train, split.test, split.threshold, frozenset(held))


def pick_cold_items(split: RankingSplit, fraction: float, rng: np.random.Generator) -> set[str]:
    """`fraction` of the items that occur in some user's test relevant set, drawn with `rng`."""
    candidates = sorted({item for u in split.eval_users() for item in split.relevant(u)})
    return set(rng.permutation(candidates)[:int(round(fraction * len(candidates)))].tolist())


# ---------------------------------------------------------------- ranking

def rank_items(scores: np.ndarray, items: list[str], exclude: list[set[str]], k: int,
               item_index: dict[str, int] | None = None) -> list[list[str]]:
    """Top-k item ids per row of `scores` [users, items], each row's `exclude` set masked out.
    Ties keep catalog order."""
    item_index = item_index or {item: i for i, item in enumerate(items)}
    scores = np.array(scores, dtype=np.float64, copy=True)
    for row, skip in enumerate(exclude):
        cols = [item_index[i] for i in skip if i in item_index]
        scores[row, cols] = -np.inf
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(np.arange(k), (len(scores), 1))
    out = []
    for row, cand in enumerate(top):
        cand = cand[np.isfinite(scores[row, cand])]
        order = cand[np.lexsort((cand, -scores[row, cand]))]
        out.append([items[i] for i in order])
    return out


def evaluate_scores(score_users, split: RankingSplit, *, users: list[str] | None = None,
                    k: int = 100, batch: int = 256) -> dict:
    """Rank with `score_users(list[user]) -> [len, n_items]` and compute `ranking_metrics`.
    MRR is computed within the top `k` (a first hit below rank k counts 0)."""
    users = users if users is not None else split.eval_users()
    index = split.item_index
    ranked, relevant = [], []
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        ranked += rank_items(score_users(chunk), split.items, [split.seen(u) for u in chunk], k, index)
        relevant += [split.relevant(u) for u in chunk]
    return ranking_metrics(ranked, relevant, len(split.items))
