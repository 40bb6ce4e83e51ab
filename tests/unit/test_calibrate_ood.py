import numpy as np
import pytest

from core.confidence.calibrate import expected_calibration_error, fit_temperature, negative_log_likelihood, softmax
from core.confidence.ood import Centroid, Energy, KNearest, MaxProbability, auroc, threshold_for_recall


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    labels = np.array([0, 1, 1])
    # bin [0.5, 1]: rows 0,1,2 (confidences 0.9, 0.9, 0.6), accuracy 2/3, mean confidence 0.8
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(abs(2 / 3 - 0.8))
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 2000)
    logits = rng.normal(size=(2000, 3))
    logits[np.arange(2000), labels] += 1.0
    sharp = logits * 5  # the same ranking, far too confident
    fitted = fit_temperature(sharp, labels)
    t = fitted.temperature
    assert t == pytest.approx(5.0, rel=0.15) and fitted.n == 2000 and fitted.note == ""
    assert negative_log_likelihood(sharp, labels, t) < negative_log_likelihood(sharp, labels)
    assert expected_calibration_error(softmax(sharp, t), labels) < expected_calibration_error(softmax(sharp), labels)


def _separable(n: int, margin: float = 3.0):
    """n rows of 3 classes, each row's true class ahead of the others by `margin` (all correct)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(scale=0.3, size=(n, 3))
    logits[np.arange(n), labels] += margin
    return logits, labels


def test_temperature_is_not_sharpened_when_validation_is_separable():
    logits, labels = _separable(72)
    fitted = fit_temperature(logits, labels)
    # unregularised NLL keeps falling as T -> 0 here; the old fit pinned at its bound e^-4 = 0.018
    assert negative_log_likelihood(logits, labels, 0.02) < negative_log_likelihood(logits, labels, 1.0)
    assert fitted.temperature == 1.0 and "no errors on the 72 validation rows" in fitted.note
    confidences = softmax(logits, fitted.temperature).max(axis=1)
    assert confidences.min() < 0.99 and not np.all(np.round(confidences, 4) == 1.0)


def test_temperature_stays_at_one_on_a_tiny_validation_split_and_says_why():
    logits, labels = _separable(8)
    logits[0] = logits[0][::-1] * 10  # one confident mistake: an unregularised fit would flatten hard
    fitted = fit_temperature(logits, labels)
    assert fitted.temperature == 1.0 and fitted.n == 8 and "only 8 validation rows" in fitted.note


def test_temperature_prior_shrinks_a_small_sample_toward_one_and_bounds_hold():
    from core.confidence.calibrate import T_MAX, T_MIN

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 30)
    logits = rng.normal(size=(30, 3))
    logits[np.arange(30), labels] += 1.0
    sharp = logits * 4
    free = fit_temperature(sharp, labels, prior_sd=1e6).temperature
    shrunk = fit_temperature(sharp, labels).temperature
    assert 1.0 < shrunk < free  # pulled toward 1 by the prior on log T, still in the data's direction
    wild = np.array([[1000.0, 0.0], [0.0, 1000.0]] * 15)
    wrong = np.array([1, 0] * 15)  # every row confidently wrong: NLL wants T -> infinity
    capped = fit_temperature(wild, wrong)
    assert T_MIN <= capped.temperature <= T_MAX and "bound" in capped.note


def test_threshold_keeps_the_target_share_of_in_scope_scores():
    scores = np.arange(1, 21) / 20  # 0.05 .. 1.0
    t = threshold_for_recall(scores, 0.95)
    assert t == 0.1 and (scores >= t).mean() == 0.95


def test_auroc_limits():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert auroc([0.5], [0.5]) == 0.5


def test_scorers_rank_in_scope_above_out_of_scope():
    logits = np.array([[5.0, 0.0], [0.1, 0.0]])
    assert MaxProbability().score(logits)[0] > MaxProbability().score(logits)[1]
    assert Energy().score(logits)[0] == pytest.approx(np.log(np.exp(5.0) + 1.0))
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    queries = np.array([[1.0, 0.0], [-1.0, -1.0]])
    centroid = Centroid().fit(train, np.array([0, 0, 1, 1]))
    knn = KNearest(k=1).fit(train, None)
    assert knn.score(queries)[0] == pytest.approx(1.0, abs=1e-6)  # an exact training point
    assert centroid.score(queries)[0] > centroid.score(queries)[1]
    assert knn.score(queries)[1] < 0


def test_min_mahalanobis_by_hand():
    from core.confidence.ood import _min_mahalanobis

    means = np.array([[0.0, 0.0], [2.0, 0.0]])
    # identity precision: squared Euclidean distance to the nearest mean
    d = _min_mahalanobis(np.array([[1.0, 1.0], [3.0, 0.0]]), means, np.eye(2))
    assert d.tolist() == pytest.approx([1 + 1, 1])  # (1,1): 2 to both means; (3,0): 1 to the second
    # a precision that discounts the y axis (variance 4): (0, 2) is 2^2 / 4 = 1 away from (0, 0)
    assert _min_mahalanobis(np.array([[0.0, 2.0]]), means, np.diag([1.0, 0.25]))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["mahalanobis", "relative_mahalanobis"])
def test_mahalanobis_scorers_rank_far_points_lower_and_survive_a_round_trip(name):
    from core.confidence.ood import SCORERS, scorer_from_state

    rng = np.random.default_rng(0)
    centres = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = np.repeat([0, 1], 50)
    train = centres[labels] + rng.normal(scale=0.3, size=(100, 3))
    scorer = SCORERS[name]().fit(train, labels)
    queries = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.1], [0.0, 0.0, 3.0]])  # two in-scope, one far off
    scores = scorer.score(queries)
    assert scores[2] < min(scores[0], scores[1])
    again = scorer_from_state(name, scorer.state())
    assert np.allclose(again.score(queries), scores, atol=1e-4)


def test_knn_energy_standardises_each_part_on_validation_and_round_trips():
    from core.confidence.ood import Energy, KNearest, KnnEnergy, in_scope_scores, scorer_from_state

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 8)).astype(np.float32)
    labels = np.repeat(np.arange(4), 10)
    val_emb, val_logits = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(30, 4)) * 3
    scorer = KnnEnergy(k=3).fit(train, labels).standardise(val_logits, val_emb, temperature=2.0)
    knn = KNearest(k=3).fit(train, labels).score(val_emb)
    energy = Energy().score(val_logits, 2.0)
    expected = (knn - knn.mean()) / knn.std() + (energy - energy.mean()) / energy.std()
    got = in_scope_scores(scorer, val_logits, val_emb, 2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert abs(got.mean()) < 1e-4  # each part has mean 0 on the validation queries
    again = scorer_from_state("knn_energy", scorer.state())
    np.testing.assert_allclose(in_scope_scores(again, val_logits, val_emb, 2.0), got, atol=1e-5)
