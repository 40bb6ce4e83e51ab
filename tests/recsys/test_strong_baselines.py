"""EASE against its closed form, implicit's ALS / BPR behind fit/score (shapes, seeds, fold-in of
histories unseen at fit time), the validation search, and `recsys evaluate --systems ease,als`."""

import json

import numpy as np
import pytest

from core.foundation.errors import UserError
from solutions.recsys.baselines import EASE, choose_on_validation, ease_weights, user_item_matrix
from solutions.recsys.data import Interaction
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.protocol import temporal_split


def split_of(histories, items):
    events = [Interaction(u, item, float(t), None) for u, its in histories.items() for t, item in enumerate(its)]
    return temporal_split(events, items, test_fraction=0.0, min_interactions=10**6)


def test_ease_two_items_by_hand():
    # users u=[a,b], v=[a]; lambda 1: B[a,b] = x_a.x_b / (x_a.x_a + 1) = 1/3, B[b,a] = 1/(1+1) = 1/2; c unseen
    model = EASE(l2=1.0).fit(split_of({"u": ["a", "b"], "v": ["a"]}, ["a", "b", "c"]))
    # c has no interactions: below every warm item (the row's warm minimum - 1)
    assert model.score([[("a", 0.0)]])[0] == pytest.approx([0.0, 1 / 3, -1.0])
    assert model.score([[("b", 0.0)]])[0] == pytest.approx([1 / 2, 0.0, -1.0])


def test_ease_equals_ridge_regression_of_each_item_on_the_others():
    # EASE's zero-diagonal constraint makes column j the ridge regression of item j on the other items
    rng = np.random.default_rng(0)
    x = (rng.random((8, 5)) < 0.5).astype(np.float64)
    x[0] = 1.0  # no empty column
    l2 = 2.0
    weights = ease_weights(__import__("scipy.sparse").sparse.csr_matrix(x), l2)
    assert np.diag(weights).tolist() == [0.0] * 5
    for j in range(5):
        others = [i for i in range(5) if i != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + l2 * np.eye(4), a.T @ x[:, j])
        assert weights[others, j] == pytest.approx(ridge, rel=1e-5, abs=1e-6)


def test_ease_regulariser_changes_scores():
    split = split_of({"u": ["a", "b", "c"], "v": ["a", "c"], "w": ["b", "c"]}, ["a", "b", "c"])
    low, high = (EASE(l2=lam).fit(split).score([[("a", 0.0)]])[0] for lam in (0.5, 50.0))
    assert not np.allclose(low, high) and abs(high[2]) < abs(low[2])


def test_ease_refuses_a_catalog_above_max_items():
    split = split_of({"u": ["a", "b", "c"]}, ["a", "b", "c"])
    with pytest.raises(UserError, match="exceed max_items=2"):
        EASE(max_items=2).fit(split)


ITEMS = [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)] + ["never"]


def clustered_split():
    """Users 0-9 consume a-items only, users 10-19 b-items only (each user 4 of the 6)."""
    rng = np.random.default_rng(1)
    histories = {f"u{n:02d}": [f"{'a' if n < 10 else 'b'}{i}" for i in rng.permutation(6)[:4]] for n in range(20)}
    return split_of(histories, ITEMS)


@pytest.mark.parametrize("make", [lambda seed: ALS(factors=4, iterations=5, seed=seed),
                                  lambda seed: BPR(factors=4, iterations=50, learning_rate=0.05, seed=seed)])
def test_factorization_is_deterministic_for_a_seed_and_scores_catalog_columns(make):
    split = clustered_split()
    histories = [split.history(u) for u in sorted(split.train)]
    first, again, other = (make(s).fit(split).score(histories) for s in (0, 0, 1))
    assert first.shape == (20, len(ITEMS))
    assert np.array_equal(first, again) and not np.allclose(first, other)
    never = ITEMS.index("never")  # no training interactions: ranked below every other item
    assert (first[:, never] == np.delete(first, never, axis=1).min(axis=1) - 1).all()


@pytest.mark.parametrize("make", [lambda: ALS(factors=4, iterations=10, alpha=10.0),
                                  lambda: BPR(factors=4, iterations=200, learning_rate=0.05)])
def test_a_history_unseen_at_fit_time_is_folded_in(make):
    model = make().fit(clustered_split())
    scores = model.score([[("a0", 0.0), ("a1", 1.0)], [("b2", 0.0)], []])
    a_cols, b_cols = slice(0, 6), slice(6, 12)
    assert scores[0, a_cols].mean() > scores[0, b_cols].mean()
    assert scores[1, b_cols].mean() > scores[1, a_cols].mean()
    assert scores.shape == (3, len(ITEMS))
    # the same history gets the same scores whatever else is in the batch
    assert np.allclose(model.score([[("b2", 0.0)]])[0], scores[1], atol=1e-6)
    assert np.isfinite(scores[2]).all()  # an empty history still gets a row (ALS: 0, BPR: the item biases)


def test_user_factors_times_item_factors_are_the_scores():
    model = BPR(factors=4, iterations=20).fit(clustered_split())
    history = [[("a0", 0.0), ("a3", 1.0)]]
    warm = (model.user_factors(history) @ model.item_factors.T)[:, :12]
    assert warm == pytest.approx(model.score(history)[:, :12], abs=1e-5)
    assert model.user_factors(history)[0, -1] == 1.0  # multiplies the item bias


def test_bad_hyper_parameter_is_a_user_error():
    with pytest.raises(UserError, match="ALS factors=0"):
        ALS(factors=0)


def test_choose_on_validation_reports_every_setting_and_prefers_the_first_on_ties():
    from solutions.recsys.data import load_interactions
    from solutions.recsys.protocol import split_dataset

    split = split_dataset(load_interactions("demo_catalog"))
    grid = [{"l2": 10.0}, {"l2": 10.0}, {"l2": 1000.0}]
    best, results = choose_on_validation(EASE, grid, split)
    assert [r["params"] for r in results] == grid
    assert results[0]["ndcg@10"] == results[1]["ndcg@10"] and 0.0 < results[0]["ndcg@10"] <= 1.0
    top = max(r["ndcg@10"] for r in results)
    assert best == next(r["params"] for r in results if r["ndcg@10"] == top)


def test_choose_on_validation_without_validation_users_is_a_user_error():
    with pytest.raises(UserError, match="too small to choose hyper-parameters"):
        choose_on_validation(EASE, [{"l2": 1.0}], split_of({"u": ["a0"]}, ITEMS))


def test_user_item_matrix_ignores_repeats_and_unknown_items():
    matrix = user_item_matrix([[("a0", 0), ("a0", 1), ("zz", 2)]], {i: n for n, i in enumerate(ITEMS)}, len(ITEMS))
    assert matrix.sum() == 1


def test_recsys_evaluate_ease_and_als_on_the_demo_catalog(capsys):
    from verticals.cli import main

    assert main(["recsys", "evaluate", "demo_catalog", "--systems", "ease,als,popular", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"ease", "als", "popular"}
    assert results["ease"]["chosen_on_validation"]["l2"] in EASE.LAMBDAS
    assert set(results["als"]["chosen_on_validation"]) == {"factors", "regularization", "alpha", "iterations"}
    assert results["ease"]["ndcg@10"] > results["popular"]["ndcg@10"]
    assert main(["recsys", "evaluate", "demo_catalog", "--systems", "ease"]) == 0
    assert "l2=" in capsys.readouterr().out
