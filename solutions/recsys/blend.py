"""A blend that serves cold items: a collaborative model for items with interactions, the text
model for items without, both on one score scale.

`ColdStartBlend(collaborative, content)` wraps any collaborative recommender with the shared
shape (`fit(split)`, `score(histories) -> [users, items]`: ItemKNN, EASE, ALS, ...) and a
`ContentRecommender` over item text embeddings. An item is *warm* when it has a training
positive in the split given to `fit`, else *cold* (new in the catalog, or never liked yet):
a collaborative model scores cold items 0 (or noise), so on its own it never shows them.

Per user (one row of scores):
- Warm items: `alpha * z(collaborative) + (1 - alpha) * z(content)`, where `z` standardises
  the row over the warm items (mean 0, std 1). Standardising instead of dividing by the max
  (as `content.HybridRecommender` does) makes the mix independent of the collaborative
  model's scale and sign: item-kNN sums, EASE's signed weights and ALS dot products all work.
- Cold items, by rank (quantile) mapping: a cold item whose text score beats all but `a` of the
  user's warm items is given the warm score found at position `(a + 0.5) / cold_boost` of the
  user's warm list (linear interpolation between neighbours). With `cold_boost` 1 a cold item
  ranks where its text alone would put it among the warm items; 2 moves it twice as far up.
Rank mapping was chosen over a calibration fitted once on the validation cut (e.g. a
regression from content cosine to collaborative score) because the collaborative score's scale
differs from user to user (a long history gives item-kNN larger sums), and because a mapping
by rank needs no fit, so it carries over unchanged to a catalog we have not seen. What the
validation cut does choose is `alpha` and `cold_boost` (`choose_blend`): it holds out a share of
the validation-relevant items as cold (their training interactions removed, as
`protocol.cold_start_split` does) and takes the pair with the best NDCG@10 over *all* items, so
the blend is rewarded for cold hits only as far as they do not cost warm ones. Where the text
model is weak that choice shows few new items (ml-latest-small with pretrained MiniLM picks the
smallest boost); `max_metric_loss` states how much NDCG the product gives up for more exposure.

Leaves out: the models themselves (baselines, content), ranking and metrics (protocol), and
serving (the live index ranks by text only; this blend is for batch scoring and the benchmark).
"""

from __future__ import annotations

import numpy as np

from core.foundation.errors import UserError
from solutions.recsys.baselines import History, user_item_matrix
from solutions.recsys.protocol import RankingSplit, cold_start_split, evaluate_scores, pick_cold_items, validation_split

ALPHAS = (1.0, 0.9, 0.8, 0.6)
# log-spaced and mostly below 1: where much of the catalog is cold (half of ml-latest-small's
# items have no training positive under the temporal cut) and the text model is weak, a cold
# item must rank well below where its text alone would put it
COLD_BOOSTS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def standardize(scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Each row minus its mean over `columns`, divided by its std there (rows with std 0 -> 0)."""
    part = scores[:, columns]
    mean = part.mean(axis=1, keepdims=True)
    std = part.std(axis=1, keepdims=True)
    return np.where(std > 0, (scores - mean) / np.where(std > 0, std, 1.0), 0.0)


def map_cold_scores(warm_scores: np.ndarray, warm_content: np.ndarray, cold_content: np.ndarray,
                    cold_boost: float = 1.0) -> np.ndarray:
    """Scores for cold items on the warm scale, one row per user (see the module docstring).
    `warm_scores`, `warm_content`: [users, n_warm]; `cold_content`: [users, n_cold]."""
    n_warm = warm_scores.shape[1]
    out = np.zeros(cold_content.shape, dtype=np.float64)
    if n_warm == 0:
        return out + cold_content
    ranks = np.arange(n_warm)
    by_text = np.sort(warm_content, axis=1)
    by_score = -np.sort(-warm_scores, axis=1)  # descending: position 0 is the user's top warm item
    for row in range(len(out)):
        above = n_warm - np.searchsorted(by_text[row], cold_content[row], side="right")
        out[row] = np.interp((above + 0.5) / cold_boost, ranks, by_score[row])
    return out


def blend_scores(collaborative: np.ndarray, content: np.ndarray, warm: np.ndarray, alpha: float = 1.0,
                 cold_boost: float = 1.0) -> np.ndarray:
    """The blend of two [users, items] score matrices; `warm` is a boolean mask over items."""
    warm_cols, cold_cols = np.flatnonzero(warm), np.flatnonzero(~warm)
    if not len(warm_cols):
        return np.asarray(content, dtype=np.float32)
    mixed = alpha * standardize(collaborative, warm_cols) + (1 - alpha) * standardize(content, warm_cols)
    out = np.empty(mixed.shape, dtype=np.float32)
    out[:, warm_cols] = mixed[:, warm_cols]
    if len(cold_cols):
        out[:, cold_cols] = map_cold_scores(mixed[:, warm_cols], content[:, warm_cols], content[:, cold_cols],
                                            cold_boost)
    return out


class ColdStartBlend:
    """A collaborative model on warm items, the content model mapped onto its scale on cold ones.

    `ColdStartBlend(collaborative, content, alpha=1.0, cold_boost=1.0)`: `collaborative` is any
    recommender with fit/score; `content` a `ContentRecommender` over the same item order as the
    splits it will be fitted on. Choose `alpha` and `cold_boost` with `choose_blend` (validation
    cut only)."""

    name = "cold-start-blend"

    def __init__(self, collaborative, content, *, alpha: float = 1.0, cold_boost: float = 1.0):
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1] (1: warm items by the collaborative model alone); got {alpha}")
        if cold_boost <= 0:
            raise UserError(f"cold_boost must be > 0 (1: a cold item ranks where its text puts it); got {cold_boost}")
        self.collaborative, self.content = collaborative, content
        self.alpha, self.cold_boost = alpha, cold_boost

    def fit(self, split: RankingSplit) -> ColdStartBlend:
        if list(self.content.items) != list(split.items):
            raise UserError("the content model's items are not the split's catalog (same ids, same order): "
                            "build its vectors with embed_catalog(encoder, split.items, texts)")
        self.collaborative.fit(split)
        self.content.fit(split)
        positives = user_item_matrix([split.history(u) for u in split.train], split.item_index, len(split.items))
        self.warm = np.asarray(positives.sum(axis=0)).ravel() > 0
        return self

    def score(self, histories: list[History]) -> np.ndarray:
        return blend_scores(self.collaborative.score(histories), self.content.score(histories), self.warm,
                            self.alpha, self.cold_boost)


def tuning_split(split: RankingSplit, cold_fraction: float, rng: np.random.Generator) -> RankingSplit:
    """The validation cut of `split` with `cold_fraction` of its relevant items made cold (their
    training interactions removed) while every item still counts as relevant."""
    validation = validation_split(split)
    held = pick_cold_items(validation, cold_fraction, rng)
    return RankingSplit(validation.items, cold_start_split(validation, held).train, validation.test,
                        validation.threshold)


def choose_blend(blend: ColdStartBlend, split: RankingSplit, *, alphas: tuple[float, ...] = ALPHAS,
                 cold_boosts: tuple[float, ...] = COLD_BOOSTS, cold_fraction: float = 0.1, seed: int = 0,
                 metric: str = "ndcg@10", max_users: int = 5000,
                 max_metric_loss: float = 0.0) -> tuple[tuple[float, float], dict]:
    """Set `blend.alpha` and `blend.cold_boost` from `metric` on `tuning_split` (validation cut,
    `cold_fraction` of its relevant items cold; at most `max_users` users, drawn with `seed`),
    then refit the blend on `split`. `max_metric_loss` 0: the best pair (ties: the larger alpha,
    then the boost nearest 1). Above 0, e.g. 0.05: the largest boost whose metric is within that
    relative share of the best (ties: the better metric), i.e. the most exposure for new items
    the product is willing to pay that much for. Returns ((alpha, cold_boost), {pair: metric})."""
    rng = np.random.default_rng(seed)
    tuning = tuning_split(split, cold_fraction, rng)
    users = tuning.eval_users()
    if not users:
        raise UserError("the validation cut has no user with a training and a test positive; the blend needs "
                        "longer histories (at least 5 interactions for some users) to choose its weights")
    if len(users) > max_users:
        users = sorted(rng.choice(users, max_users, replace=False).tolist())
    blend.fit(tuning)
    histories = [tuning.history(u) for u in users]
    collaborative, content = blend.collaborative.score(histories), blend.content.score(histories)
    row = {u: r for r, u in enumerate(users)}
    results = {}
    for alpha in alphas:
        for boost in cold_boosts:
            scores = blend_scores(collaborative, content, blend.warm, alpha, boost)
            results[(alpha, boost)] = evaluate_scores(lambda us, scores=scores: scores[[row[u] for u in us]],
                                                      tuning, users=users)[metric]
    best = max(results, key=lambda key: (results[key], key[0], -abs(np.log(key[1]))))
    if max_metric_loss > 0:
        floor = (1 - max_metric_loss) * results[best]
        best = max((key for key in results if results[key] >= floor), key=lambda key: (key[1], results[key]))
    blend.alpha, blend.cold_boost = best
    blend.fit(split)
    return best, results
