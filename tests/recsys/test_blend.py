"""The cold-start blend: the pure mapping on numbers checkable by hand, then a two-topic catalog
where a new item that item-kNN cannot score reaches the right users' lists through its text."""

import numpy as np
import pytest

from core.foundation.errors import UserError
from solutions.recsys.baselines import ItemKNN
from solutions.recsys.blend import (
    ColdStartBlend,
    blend_scores,
    choose_blend,
    map_cold_scores,
    standardize,
    tuning_split,
)
from solutions.recsys.content import ContentRecommender
from solutions.recsys.data import Interaction
from solutions.recsys.protocol import RankingSplit, evaluate_scores, temporal_split


def test_standardize_uses_the_mean_and_std_of_the_given_columns():
    out = standardize(np.array([[1.0, 2.0, 3.0, 100.0], [4.0, 4.0, 4.0, 4.0]]), np.array([0, 1, 2]))
    std = np.sqrt(2 / 3)
    assert np.allclose(out[0], [-1 / std, 0.0, 1 / std, 98 / std])
    assert np.array_equal(out[1], [0.0, 0.0, 0.0, 0.0])  # a constant row stays 0


def test_a_cold_item_gets_the_warm_score_at_its_text_rank():
    warm_scores, warm_content = np.array([[10.0, 5.0, 1.0]]), np.array([[0.9, 0.5, 0.1]])
    cold = np.array([[0.95, 0.3, 0.0]])
    # 0.95 beats every warm text: position 0.5, halfway between 10 and 5; the others fall off the end
    assert np.allclose(map_cold_scores(warm_scores, warm_content, cold), [[7.5, 1.0, 1.0]])
    # cold_boost 2 halves the position: 0.25 -> 10 - 0.25 * 5; 1.25 -> 5 - 0.25 * 4; 1.75 -> 5 - 0.75 * 4
    assert np.allclose(map_cold_scores(warm_scores, warm_content, cold, cold_boost=2.0), [[8.75, 4.0, 2.0]])


def test_blend_keeps_the_collaborative_order_on_warm_items_with_alpha_one():
    collaborative = np.array([[3.0, 1.0, 2.0, 0.0]])
    content = np.array([[0.1, 0.9, 0.5, 0.8]])
    out = blend_scores(collaborative, content, np.array([True, True, True, False]), alpha=1.0)
    assert list(np.argsort(-out[0, :3])) == [0, 2, 1]
    # the cold item's text (0.8) beats one warm text (0.1): position 1.5 between z-scores of 2 and 1
    z = (np.array([3.0, 2.0, 1.0]) - 2.0) / np.sqrt(2 / 3)
    assert out[0, 3] == pytest.approx((z[1] + z[2]) / 2)


# ---------------------------------------------------------------- a two-topic catalog
TOPIC_A, TOPIC_B = [f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]
NEW = {"x-a": TOPIC_A, "x-b": TOPIC_B}  # sorted last: ties in score never favour them
ITEMS = sorted(TOPIC_A + TOPIC_B + list(NEW))


def _vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = [np.array([1.0, 0.0]) if item in TOPIC_A or item == "x-a" else np.array([0.0, 1.0]) for item in ITEMS]
    noise = 0.1 * rng.standard_normal((len(ITEMS), 2)) * np.array([[item not in NEW] for item in ITEMS])
    vectors = np.hstack([np.stack(rows), noise])  # a new item's text is its topic, exactly
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _split() -> RankingSplit:
    """20 users per topic; each likes 6 of the topic's items, then (last, in the test window)
    the topic's new item, which nobody has in training."""
    rng, events = np.random.default_rng(1), []
    for new, topic in NEW.items():
        for u in range(20):
            user = f"{new}-user{u}"
            liked = list(rng.permutation(topic)[:6]) + [new]
            events += [Interaction(user, item, float(t), 5.0) for t, item in enumerate(liked)]
    return temporal_split(events, ITEMS, test_fraction=0.2, threshold=3.5)


def _blend(**kwargs) -> ColdStartBlend:
    return ColdStartBlend(ItemKNN(), ContentRecommender(_vectors(), ITEMS), **kwargs)


def _new_item_recall(model, split) -> float:
    """Recall@10 counting only the new items as relevant."""
    model.fit(split)
    targets = RankingSplit(split.items, split.train, split.test, split.threshold, frozenset(NEW))
    return evaluate_scores(lambda us: model.score([split.history(u) for u in us]), targets)["recall@10"]


def test_the_blend_shows_the_new_item_that_item_knn_cannot():
    split = _split()
    assert _new_item_recall(ItemKNN(), split) == 0.0  # it scores the new items 0, behind the other topic
    blend = _blend().fit(split)
    assert not blend.warm[ITEMS.index("x-a")] and blend.warm[ITEMS.index("a0")]
    top = np.argsort(-blend.score([split.history("x-a-user0")])[0])
    seen = split.seen("x-a-user0")
    unseen = [ITEMS[i] for i in top if ITEMS[i] not in seen]
    assert "x-a" in unseen[:6] and all(i in TOPIC_A for i in unseen[:6] if i != "x-a")  # above all of topic B
    assert _new_item_recall(_blend(), split) == 1.0


def test_choose_blend_uses_only_the_training_histories():
    split = _split()
    best, results = choose_blend(_blend(), split, alphas=(1.0, 0.5), cold_boosts=(0.5, 1.0, 2.0))
    assert set(results) == {(a, b) for a in (1.0, 0.5) for b in (0.5, 1.0, 2.0)}
    assert results[best] == max(results.values())
    no_test = RankingSplit(split.items, split.train, {u: [] for u in split.test}, split.threshold)
    assert choose_blend(_blend(), no_test, alphas=(1.0, 0.5), cold_boosts=(0.5, 1.0, 2.0)) == (best, results)


def test_a_metric_budget_buys_the_largest_boost_within_it():
    split = _split()
    _, results = choose_blend(_blend(), split, alphas=(1.0,), cold_boosts=(0.01, 1.0, 100.0))
    best = max(results.values())
    (alpha, boost), _ = choose_blend(_blend(), split, alphas=(1.0,), cold_boosts=(0.01, 1.0, 100.0),
                                     max_metric_loss=0.5)
    allowed = [b for (_, b), value in results.items() if value >= 0.5 * best]
    assert boost == max(allowed) and alpha == 1.0


def test_the_tuning_split_makes_some_validation_items_cold_but_keeps_all_relevant():
    split = _split()
    tuning = tuning_split(split, 0.5, np.random.default_rng(0))
    trained = {e.item for e in tuning.training_interactions()}
    relevant = {i for u in tuning.eval_users() for i in tuning.relevant(u)}
    assert tuning.targets is None and relevant - trained  # some relevant items lost their interactions


def test_a_content_model_over_another_catalog_order_is_refused():
    vectors = _vectors()
    blend = ColdStartBlend(ItemKNN(), ContentRecommender(vectors[::-1], ITEMS[::-1]))
    with pytest.raises(UserError, match="same ids, same order"):
        blend.fit(_split())
    with pytest.raises(UserError, match="cold_boost must be > 0"):
        _blend(cold_boost=0.0)
