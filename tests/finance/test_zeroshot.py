"""core.models.zeroshot: the pure maths by hand, then the classifier on the tiny backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.foundation.errors import UserError
from core.models.zeroshot import ZeroShotClassifier, prototypes, zero_shot_probs


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


def _alone(backbone, texts):
    """Each text embedded on its own (no padding), mean-pooled by hand: the tiny backbone's pooling."""
    import torch

    with torch.no_grad():
        return np.stack([backbone.encoder(**backbone.tokenizer([t], return_tensors="pt")).last_hidden_state[0]
                         .mean(dim=0).numpy() for t in texts])


def test_probabilities_are_the_hand_maths_on_the_encoder_outputs(tiny_backbone_dir):
    descriptions = {"card": ["my card was declined at the shop", "card"],
                    "transfer": ["my transfer is pending", "send money abroad to another bank account today"],
                    "refund": ["i want a refund"]}
    clf = ZeroShotClassifier("tiny", descriptions, temperature=0.1, batch_size=2)
    texts = ["hello", "why was my card declined at the atm this morning", "refund", "where is my transfer"]
    expected_protos = prototypes([_alone(clf.backbone, descriptions[label]) for label in clf.labels])
    np.testing.assert_allclose(clf.label_prototypes, expected_protos, atol=1e-5)
    expected = zero_shot_probs(_alone(clf.backbone, texts), expected_protos, 0.1)
    np.testing.assert_allclose(clf.predict_proba(texts), expected, atol=1e-4)
    # the same call as a trained classifier's: any batch size gives the same rows in input order
    np.testing.assert_allclose(clf.predict_proba(texts, batch_size=1), expected, atol=1e-4)
    np.testing.assert_allclose(clf.encode(texts, batch_size=3), _alone(clf.backbone, texts), atol=1e-5)
