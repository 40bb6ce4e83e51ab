"""core.zeroshot: the pure maths by hand, then the classifier on the tiny backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import UserError
from core.zeroshot import ZeroShotClassifier, prototypes, zero_shot_probs


def test_prototype_is_normalised_mean_of_normalised_descriptions():
    proto = prototypes([np.array([[2.0, 0.0], [0.0, 5.0]])])
    assert proto[0] == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2)])


def test_probs_are_softmax_of_cosine_over_temperature():
    probs = zero_shot_probs(np.array([[3.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]), temperature=0.5)
    # cosines (1, 0) / 0.5 -> logits (2, 0)
    assert probs[0] == pytest.approx([math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)])


def test_a_description_is_classified_as_its_own_label(tiny_backbone_dir):
    clf = ZeroShotClassifier("tiny", {"card": ["my card was declined at the shop"],
                                      "transfer": ["my transfer is pending", "send money abroad"]})
    assert clf.labels == ["card", "transfer"]
    probs = clf.predict_proba(["my card was declined at the shop", "hello"])
    assert probs.shape == (2, 2) and probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    # cosine with its own single-description prototype is exactly 1, the maximum possible
    assert probs[0, 0] > probs[0, 1]
    assert clf.predict_proba([]).shape == (0, 2)


def test_label_without_description_is_a_user_error(tiny_backbone_dir):
    with pytest.raises(UserError, match="has no"):
        ZeroShotClassifier("tiny", {"a": ["x"], "b": []})
