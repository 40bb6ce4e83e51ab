"""Ranking metrics by hand and the temporal split."""

import math

import numpy as np
import pytest

from solutions.recsys.data import Interaction
from solutions.recsys.protocol import (
    catalog_coverage,
    cold_start_split,
    mrr,
    ndcg_at_k,
    rank_items,
    ranking_metrics,
    recall_at_k,
    temporal_split,
    validation_split,
)


def test_recall_counts_hits_over_relevant():
    assert recall_at_k(["a", "b", "c"], {"a", "c", "z"}, 2) == 1 / 3
    assert recall_at_k(["a", "b", "c"], {"a", "c"}, 3) == 1.0


def test_recall_is_zero_without_hits_or_relevant_items():
    assert recall_at_k(["a", "b"], {"z"}, 2) == 0.0
    assert recall_at_k(["a", "b"], set(), 2) == 0.0


def test_ndcg_by_hand():
    # hits at ranks 2 and 3 of 3 relevant: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3) + 1/log2(4))
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_at_k(["x", "a", "b"], {"a", "b", "c"}, 3) == pytest.approx(expected)


def test_ndcg_perfect_ranking_is_one_and_no_hits_zero():
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}, 2) == 0.0


def test_mrr_is_reciprocal_rank_of_first_hit():
    assert mrr(["x", "y", "a", "b"], {"a", "b"}) == 1 / 3
    assert mrr(["a"], {"a"}) == 1.0
    assert mrr(["x"], {"a"}) == 0.0


def test_catalog_coverage_counts_distinct_items_in_top_k():
    assert catalog_coverage([["a", "b", "c"], ["a", "d"]], 10, 2) == 3 / 10


def test_ranking_metrics_keys_and_means():
    out = ranking_metrics([["a", "b"], ["x", "y"]], [{"a"}, {"y"}], 4)
    assert out["recall@10"] == 1.0 and out["mrr"] == (1 + 1 / 2) / 2 and out["users"] == 2
    assert set(out) == {"users", "recall@10", "recall@20", "ndcg@10", "mrr", "coverage@10"}


def test_rank_items_excludes_and_breaks_ties_by_catalog_order():
    scores = np.array([[0.5, 0.9, 0.5, 0.1]])
    assert rank_items(scores, ["a", "b", "c", "d"], [{"b"}], 3) == [["a", "c", "d"]]


def events(user, items, start=0, ratings=None):
    return [Interaction(user, item, float(start + t), None if ratings is None else ratings[t])
            for t, item in enumerate(items)]


def test_temporal_split_holds_out_each_users_latest_interactions():
    data = events("u", list("abcdefghij")) + events("v", list("klm"))  # v below min_interactions
    shuffled = [data[i] for i in np.random.default_rng(0).permutation(len(data))]
    split = temporal_split(shuffled, list("abcdefghijklm"), test_fraction=0.2, min_interactions=5)
    assert [e.item for e in split.train["u"]] == list("abcdefgh")
    assert [e.item for e in split.test["u"]] == ["i", "j"]
    assert "v" not in split.test and len(split.train["v"]) == 3
    assert max(e.timestamp for e in split.train["u"]) < min(e.timestamp for e in split.test["u"])
    assert split.eval_users() == ["u"]


def test_ratings_below_threshold_are_seen_but_not_positive():
    ratings = [5, 1, 4, 5, 2, 5, 1, 4, 2, 5]
    split = temporal_split(events("u", list("abcdefghij"), ratings=ratings), list("abcdefghij"),
                           test_fraction=0.2, threshold=3.5)
    assert [item for item, _ in split.history("u")] == ["a", "c", "d", "f", "h"]
    assert "b" in split.seen("u")
    assert split.relevant("u") == {"j"}  # i is rated 2


def test_validation_split_never_uses_test_windows():
    split = temporal_split(events("u", list("abcdefghij")), list("abcdefghij"))
    val = validation_split(split)
    assert {e.item for e in val.test["u"]} == {"g", "h"} and not {"i", "j"} & (val.seen("u") | val.relevant("u"))


def test_cold_start_split_removes_training_interactions_of_held_items():
    split = temporal_split(events("u", list("abcdefghij")), list("abcdefghij"))
    cold = cold_start_split(split, {"b", "j"})
    assert "b" not in cold.seen("u") and cold.relevant("u") == {"j"}
