"""core.mlops.selection: each active-learning strategy on data small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.foundation.errors import UserError
from core.mlops.selection import STRATEGIES, Pool, entropies, gradient_factors, margins, select

PROBS = np.array([
    [0.90, 0.05, 0.05],  # margin 0.85
    [0.45, 0.40, 0.15],  # margin 0.05: the most ambiguous
    [0.60, 0.30, 0.10],  # margin 0.30
    [1 / 3, 1 / 3, 1 / 3],  # margin 0, entropy log 3: the most uncertain
    [0.50, 0.45, 0.05],  # margin 0.05 (tie with row 1: the earlier row first)
])


def rng(seed=0):
    return np.random.default_rng(seed)


def test_margins_and_entropies_by_hand():
    assert margins(PROBS) == pytest.approx([0.85, 0.05, 0.30, 0.0, 0.05])
    assert entropies(PROBS)[3] == pytest.approx(math.log(3))
    assert entropies(np.array([[1.0, 0.0]]))[0] == 0.0


def test_margin_picks_the_most_ambiguous_rows_first():
    picks = select("margin", Pool(PROBS), 3, rng())
    assert picks.index.tolist() == [3, 1, 4]  # 0 < 0.05 = 0.05 (tie: earlier row first)
    assert picks.score == pytest.approx([0.0, 0.05, 0.05])


def test_entropy_picks_the_most_uncertain_rows_first():
    picks = select("entropy", Pool(PROBS), 2, rng())
    assert picks.index.tolist() == [3, 1]
    assert picks.score[0] == pytest.approx(math.log(3))
    assert picks.score[1] == pytest.approx(-(0.45 * math.log(0.45) + 0.4 * math.log(0.4) + 0.15 * math.log(0.15)))


def test_random_is_seeded_and_never_repeats():
    probs = np.full((50, 2), 0.5)
    first, again, other = (select("random", Pool(probs), 10, rng(s)).index for s in (1, 1, 2))
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()
    assert len(set(first.tolist())) == 10 and all(0 <= i < 50 for i in first)


def test_a_budget_above_the_pool_takes_the_whole_pool_once():
    for name in STRATEGIES:
        picks = select(name, Pool(PROBS, embeddings=np.eye(5)), 99, rng())
        assert sorted(picks.index.tolist()) == [0, 1, 2, 3, 4], name


def test_coreset_picks_far_apart_points_and_counts_labelled_ones_as_covered():
    # a line: 0 is labelled; 0.1 is next to it; 10 and 5 are far; 10.1 next to 10
    points = np.array([[0.1], [5.0], [10.0], [10.1], [0.0]])
    pool = Pool(np.full((5, 2), 0.5), embeddings=points, labelled=np.array([[0.0]]))
    picks = select("coreset", pool, 3, rng())
    # farthest from 0 is 10.1; then 5 (5 from 0, 5.1 from 10.1); then 0.1 or 10 (0.1 each: the earlier row);
    # never the pool's copy of the labelled point (row 4)
    assert picks.index.tolist() == [3, 1, 0]
    assert picks.score == pytest.approx([10.1, 5.0, 0.1])


def test_coreset_without_labelled_points_starts_from_a_seeded_draw():
    points = np.array([[0.0], [1.0], [2.0], [9.0]])
    picks = select("coreset", Pool(np.full((4, 2), 0.5), embeddings=points), 2, rng(3))
    first = int(np.random.default_rng(3).integers(4))
    assert picks.index[0] == first and np.isnan(picks.score[0])
    assert picks.index[1] == (3 if first != 3 else 0)


def test_badge_distances_factor_exactly():
    generator = rng(5)
    probs = generator.dirichlet(np.ones(4), size=6)
    x = generator.normal(size=(6, 3))
    a = gradient_factors(probs)
    explicit = np.stack([np.outer(a[i], x[i]).ravel() for i in range(6)])
    assert a[0] == pytest.approx(np.eye(4)[probs[0].argmax()] - probs[0])
    d2 = ((explicit[:, None, :] - explicit[None, :, :]) ** 2).sum(-1)
    factored = ((a * a).sum(1)[:, None] * (x * x).sum(1)[:, None] + ((a * a).sum(1) * (x * x).sum(1))[None, :]
                - 2 * (a @ a.T) * (x @ x.T))
    assert factored == pytest.approx(d2)


def test_badge_picks_high_gradient_rows_that_differ():
    # two clusters of uncertain texts (5 copies each, orthogonal embeddings; cluster A's slightly longer),
    # and 2 certain rows (zero gradient, at the origin of gradient space)
    probs = np.array([[0.5, 0.5]] * 10 + [[1.0, 0.0]] * 2)
    x = np.array([[3.1, 0.0]] * 5 + [[0.0, 3.0]] * 5 + [[1.0, 1.0]] * 2)
    seconds = []
    for seed in range(100):
        picks = select("badge", Pool(probs, embeddings=x), 2, rng(seed))
        assert picks.index[0] == 0  # the largest gradient norm |a| |x| = sqrt(0.5) * 3.1 (ties: the first row)
        assert picks.score[0] == pytest.approx(math.sqrt(0.5) * 3.1)
        seconds.append(int(picks.index[1]))
    assert not set(seconds) & {1, 2, 3, 4}  # copies of the first pick carry no D^2 mass
    # D^2 of a cluster-B row: |g_A|^2 + |g_B|^2 (orthogonal) = 4.805 + 4.5; of a certain row: |g_A|^2 = 4.805.
    # P(B) = 5 * 9.305 / (5 * 9.305 + 2 * 4.805) = 0.83
    assert sum(5 <= s <= 9 for s in seconds) >= 70


def test_badge_still_fills_the_budget_when_every_row_is_certain():
    probs = np.array([[1.0, 0.0]] * 4)
    picks = select("badge", Pool(probs, embeddings=np.ones((4, 2))), 3, rng())
    assert len(set(picks.index.tolist())) == 3


@pytest.mark.parametrize("name, pool, budget, message", [
    ("margin", Pool(PROBS), 0, "at least 1"),
    ("margin", Pool(PROBS), 2.5, "whole number"),
    ("nope", Pool(PROBS), 1, "unknown strategy 'nope'; choose one of margin, entropy, badge, coreset, random"),
    ("coreset", Pool(PROBS), 1, "needs one embedding per candidate"),
    ("badge", Pool(PROBS, embeddings=np.ones((2, 2))), 1, "needs one embedding per candidate"),
    ("entropy", Pool(np.zeros((0, 3))), 1, "the pool is empty"),
])
def test_bad_requests_are_user_errors(name, pool, budget, message):
    with pytest.raises(UserError, match=message):
        select(name, pool, budget, rng())


def test_multi_label_pools_are_read_label_by_label_against_their_thresholds():
    probs = np.array([[0.9, 0.05, 0.1],   # sure of label 0, sure of the others: far from every threshold
                      [0.52, 0.1, 0.1],   # label 0 right at its threshold 0.5: the closest call
                      [0.9, 0.35, 0.1]])  # label 1 at 0.35 against its threshold 0.3: second closest
    thresholds = np.array([0.5, 0.3, 0.5])
    assert margins(probs, thresholds) == pytest.approx([0.25, 0.02, 0.05])
    # softmax margins would rank these rows otherwise (row 0's top two are 0.9 and 0.1): the thresholds matter
    assert list(select("margin", Pool(probs, thresholds=thresholds), 3, np.random.default_rng(0)).index) == [1, 2, 0]
    binary = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert entropies(probs, multi_label=True)[1] == pytest.approx(binary(0.52) + 2 * binary(0.1))
    assert select("entropy", Pool(probs, thresholds=thresholds), 1, np.random.default_rng(0)).index[0] == 1
    assert gradient_factors(probs, thresholds)[2] == pytest.approx([0.1, 0.65, -0.1])  # 1[p >= t] - p
    with pytest.raises(UserError, match="one threshold per label"):
        select("margin", Pool(probs, thresholds=thresholds[:2]), 1, np.random.default_rng(0))
