"""solutions.finance.sentiment: the score is P(pos) - P(neg), columns found by label name."""

import numpy as np
import pytest

from core.foundation.errors import UserError
from solutions.finance.sentiment import score_texts, sentiment_from_probs


def test_score_is_positive_minus_negative_whatever_the_label_order():
    s = sentiment_from_probs(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), ["positive", "neutral", "negative"])
    assert s.score == pytest.approx([0.7 - 0.1, 0.1 - 0.6])
    assert s.label == ["positive", "negative"]


def test_model_without_sentiment_labels_is_a_user_error():
    with pytest.raises(UserError, match="missing"):
        sentiment_from_probs(np.ones((1, 2)) / 2, ["card", "transfer"])


def test_score_texts_uses_the_models_probabilities():
    class Stub:
        labels = ["negative", "neutral", "positive"]

        def predict_proba(self, texts, batch_size=64):
            return np.array([[0.5, 0.25, 0.25]] * len(texts))

    assert score_texts(Stub(), ["a", "b"]).score == pytest.approx([-0.25, -0.25])
    assert len(score_texts(Stub(), []).score) == 0


def test_score_texts_passes_the_batch_size_to_every_kind_of_classifier(tiny_backbone_dir):
    from core.models.zeroshot import ZeroShotClassifier
    from solutions.finance.sentiment import ZERO_SHOT_DESCRIPTIONS

    seen = []

    class Recording:
        labels = ("negative", "neutral", "positive")

        def predict_proba(self, texts, batch_size=64):
            seen.append(batch_size)
            return np.full((len(texts), 3), 1 / 3)

    score_texts(Recording(), ["a", "b"], batch_size=7)
    assert seen == [7]
    zero_shot = ZeroShotClassifier("tiny", ZERO_SHOT_DESCRIPTIONS)
    texts = ["profit rose", "shares fell sharply after the bank disclosed losses", "the company is in london"]
    one = score_texts(zero_shot, texts, batch_size=1)
    many = score_texts(zero_shot, texts, batch_size=64)
    np.testing.assert_allclose(one.score, many.score, atol=1e-5)
    np.testing.assert_allclose(one.score, zero_shot.predict_proba(texts)[:, 2] - zero_shot.predict_proba(texts)[:, 0],
                               atol=1e-5)
