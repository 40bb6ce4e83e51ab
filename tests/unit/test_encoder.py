"""core.models.encoder: pooling by hand, then SentenceEncoder on the tiny backbone against a one-text-at-a-time
reference (no padding at all), its batching, its modes, and TextClassifier's inference through it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.models.backbones import load_backbone
from core.models.encoder import SentenceEncoder, encode_ids, pool
from core.foundation.errors import UserError
from core.models.classifier import build_classifier

# short and long texts interleaved, so fixed slices of the input order mix lengths in every batch
MIXED = ["card", "a much longer sentence about a card payment that was declined twice at the shop today",
         "hi", "where is the transfer i sent yesterday to another bank in euros", "my card",
         "why was i charged twice for the same purchase and how do i get a refund to my account", "pin",
         "the company reported strong quarterly earnings and raised its guidance for the year", "ok",
         "how do i reset my password", "thanks"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


def one_by_one(backbone, texts, *, pooling="mean", normalize=False):
    """Reference: each text alone (no padding), pooled by hand over its tokens."""
    rows = []
    with torch.no_grad():
        for text in texts:
            batch = backbone.tokenizer([text], truncation=True, max_length=backbone.max_length, return_tensors="pt")
            hidden = backbone.encoder.eval()(input_ids=batch["input_ids"],
                                             attention_mask=batch["attention_mask"]).last_hidden_state[0]
            emb = {"cls": hidden[0], "mean": hidden.mean(dim=0), "max": hidden.max(dim=0).values}[pooling]
            rows.append((emb / emb.norm() if normalize else emb).numpy())
    return np.stack(rows)


def test_pool_modes_by_hand_ignore_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                           [[5.0, 0.0], [-1.0, 6.0], [2.0, 2.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0], [5.0, 0.0]]
    np.testing.assert_allclose(pool(hidden, mask, "mean").numpy(),
                               [[(1 + 3) / 2, (2 + 4) / 2], [(5 - 1 + 2) / 3, (0 + 6 + 2) / 3]], rtol=1e-6)
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0], [5.0, 6.0]]


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
@pytest.mark.parametrize("normalize", [False, True])
def test_encode_matches_one_text_at_a_time_in_input_order(backbone, pooling, normalize):
    enc = SentenceEncoder(backbone.encoder, backbone.tokenizer, pooling=pooling, normalize=normalize,
                          max_length=backbone.max_length)
    got = enc.encode(MIXED, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (len(MIXED), backbone.dim)
    np.testing.assert_allclose(got, one_by_one(backbone, MIXED, pooling=pooling, normalize=normalize), atol=1e-5)


def test_normalize_gives_unit_rows_and_off_keeps_the_raw_pooled_norm(backbone):
    raw = SentenceEncoder.from_backbone(backbone, normalize=False).encode(MIXED)
    unit = SentenceEncoder.from_backbone(backbone, normalize=True).encode(MIXED)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_encode_buckets_by_length_so_it_pads_less_than_fixed_slices(backbone):
    enc = SentenceEncoder.from_backbone(backbone)
    shapes = []
    hook = backbone.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append((tuple(kwargs["input_ids"].shape), int(kwargs["attention_mask"].sum()))),
        with_kwargs=True)
    try:
        enc.encode(MIXED, batch_size=4)
    finally:
        hook.remove()
    lengths = [len(backbone.tokenizer(t)["input_ids"]) for t in MIXED]
    assert sum(real for _, real in shapes) == sum(lengths)  # every text once, nothing truncated
    bucketed = sum(rows * width for (rows, width), _ in shapes)
    fixed = sum(len(lengths[i:i + 4]) * max(lengths[i:i + 4]) for i in range(0, len(lengths), 4))
    assert all(rows <= 4 for (rows, _), _ in shapes)
    assert bucketed - sum(lengths) < (fixed - sum(lengths)) / 2, (bucketed, fixed, sum(lengths))


def test_empty_input_gives_zero_rows_of_the_right_width(backbone):
    enc = SentenceEncoder.from_backbone(backbone)
    empty = enc.encode([])
    assert empty.shape == (0, backbone.dim) and empty.dtype == np.float32
    assert enc.map_batches([], lambda b: enc.embed(**b)[:, :3], 3).shape == (0, 3)


def test_encode_restores_train_mode_even_when_the_batch_function_raises(backbone):
    enc = SentenceEncoder.from_backbone(backbone)
    backbone.encoder.train()
    try:
        first = enc.encode(MIXED[:4])
        assert backbone.encoder.training
        np.testing.assert_array_equal(first, enc.encode(MIXED[:4]))  # eval mode inside: no dropout
        with pytest.raises(RuntimeError, match="boom"):
            enc.map_batches(MIXED, lambda b: (_ for _ in ()).throw(RuntimeError("boom")), 1)
        assert backbone.encoder.training
    finally:
        backbone.encoder.eval()
    enc.encode(MIXED[:2])
    assert not backbone.encoder.training


def test_tokenize_pads_to_the_batch_longest_and_truncates_at_max_length(backbone):
    enc = SentenceEncoder.from_backbone(backbone, max_length=8)
    batch = enc.tokenize(["hi", "card"])
    assert batch["input_ids"].shape[1] == max(len(backbone.tokenizer(t)["input_ids"]) for t in ["hi", "card"])
    assert enc.tokenize([MIXED[1]])["input_ids"].shape == (1, 8)
    emb = enc.embed(batch["input_ids"], batch["attention_mask"])
    assert emb.shape == (2, backbone.dim) and emb.requires_grad  # the training side keeps gradients


def test_from_backbone_reads_pooling_and_normalize_and_takes_overrides(backbone):
    cls_unit = dataclasses.replace(backbone, pooling="cls", normalize=True)
    enc = SentenceEncoder.from_backbone(cls_unit)
    assert (enc.pooling, enc.normalize, enc.max_length) == ("cls", True, backbone.max_length)
    enc = SentenceEncoder.from_backbone(cls_unit, max_length=16, normalize=False)
    assert (enc.pooling, enc.normalize, enc.max_length) == ("cls", False, 16)


def test_unknown_pooling_and_bad_sizes_are_user_errors(backbone):
    with pytest.raises(UserError, match="unknown pooling 'weighted'"):
        SentenceEncoder(backbone.encoder, backbone.tokenizer, pooling="weighted", normalize=False, max_length=8)
    with pytest.raises(UserError, match="max_length"):
        SentenceEncoder.from_backbone(backbone, max_length=0)
    with pytest.raises(UserError, match="batch_size"):
        SentenceEncoder.from_backbone(backbone).encode(MIXED, batch_size=0)


def test_classifier_inference_is_the_sentence_encoder_plus_its_head(backbone):
    model = build_classifier(backbone, ["a", "b", "c"])
    with torch.no_grad():
        model.head.weight.normal_()
    emb = one_by_one(backbone, MIXED)
    model.train()  # predict_* must neither apply the head's dropout nor leave train mode
    np.testing.assert_allclose(model.encode(MIXED, batch_size=3), emb, atol=1e-5)
    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    logits = emb @ w.T + b
    np.testing.assert_allclose(model.predict_logits(MIXED, batch_size=3), logits, atol=1e-4)
    model.temperature = 2.0
    scaled = np.exp(logits / 2.0 - (logits / 2.0).max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(MIXED, batch_size=3), scaled / scaled.sum(axis=1, keepdims=True),
                               atol=1e-5)
    all_logits, all_emb = model.predict_all(MIXED, batch_size=3)
    np.testing.assert_allclose(all_logits, logits, atol=1e-4)
    np.testing.assert_allclose(all_emb, emb, atol=1e-5)
    assert model.training and model.encoder.training and model.predict_logits([]).shape == (0, 3)
    model.eval()


def test_classifier_sees_an_encoder_swapped_in_after_construction(backbone):
    model = build_classifier(backbone, ["a", "b"])
    other = build_classifier(load_backbone("tiny"), ["a", "b"]).encoder
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    model.encoder = other  # what core.export.onnx does with a merged LoRA encoder
    assert model.sentence_encoder.encoder is other
    assert not np.allclose(model.encode(MIXED[:3]), one_by_one(backbone, MIXED[:3]), atol=1e-3)


def test_encode_ids_are_the_tokenizer_calls_ids_and_leave_the_tokenizer_as_it_was(backbone):
    tokenizer = backbone.tokenizer
    texts = [*MIXED, "", "word " * 300, "[CLS] hi [SEP] [PAD]"]
    for max_length in (8, 64, backbone.max_length):
        expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        assert encode_ids(tokenizer, texts, max_length) == expected
    assert max(len(ids) for ids in encode_ids(tokenizer, texts, 8)) == 8
    padded = tokenizer(MIXED[:3], padding=True)["input_ids"]  # transformers' own calls still work after ours
    assert len({len(ids) for ids in padded}) == 1
    assert encode_ids(tokenizer, MIXED[:3], 64) == tokenizer(MIXED[:3], truncation=True, max_length=64)["input_ids"]
