"""solutions.recsys.content.TextEncoder: a thin wrapper over core.models.encoder.SentenceEncoder that always normalises."""

from __future__ import annotations

import numpy as np
import torch

from core.models.encoder import SentenceEncoder
from solutions.recsys.content import TextEncoder

ITEMS = ["Toy Story (1995) Adventure|Animation|Children|Comedy|Fantasy", "Heat (1995) Action|Crime|Thriller",
         "Up", "The Lord of the Rings: The Fellowship of the Ring (2001) Adventure|Fantasy pixar dwarves elves ring",
         "Jumanji"]


def test_text_encoder_is_the_sentence_encoder_with_normalisation_on(tiny_backbone_dir):
    encoder = TextEncoder.load("tiny", max_length=16)
    assert encoder.max_length == 16 and encoder.dim == encoder.backbone.dim
    assert TextEncoder(encoder.backbone, max_length=10_000).max_length == encoder.backbone.max_length
    assert encoder.backbone.normalize is False  # the tiny backbone does not normalise; recsys always does
    reference = SentenceEncoder(encoder.backbone.encoder, encoder.backbone.tokenizer, pooling=encoder.backbone.pooling,
                                normalize=True, max_length=16)
    got = encoder.encode(ITEMS, batch_size=2)
    np.testing.assert_allclose(got, reference.encode(ITEMS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # input order: each item alone gives its own row
    np.testing.assert_allclose(got, np.concatenate([encoder.encode([t]) for t in ITEMS]), atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_training_side_embeds_with_gradients_and_encode_keeps_train_mode(tiny_backbone_dir):
    encoder = TextEncoder.load("tiny", max_length=16)
    batch = encoder.tokenize(ITEMS[:3])
    assert batch["input_ids"].shape[1] <= 16
    encoder.backbone.encoder.train()
    emb = encoder.embed(batch)
    assert emb.requires_grad and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    encoder.encode(ITEMS)
    assert encoder.backbone.encoder.training
