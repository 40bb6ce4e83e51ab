"""Contrastive loss, pair mining, the duplicate-free sampler and a saved encoder that reloads."""

import numpy as np
import pytest
import torch

from core.engine.contrastive import mnrl, no_duplicate_batches
from solutions.recsys.content import TextEncoder
from solutions.recsys.data import Interaction
from solutions.recsys.finetune import FinetuneConfig, co_consumption_pairs, finetune_encoder, save_encoder
from solutions.recsys.protocol import temporal_split


def test_loss_is_lower_on_true_pairs_than_on_shuffled_pairs():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.nn.functional.normalize(torch.randn(16, 8, generator=gen), dim=-1)
    positives = torch.nn.functional.normalize(anchors + 0.1 * torch.randn(16, 8, generator=gen), dim=-1)
    loss = mnrl(symmetric=True)
    true = loss.compute_loss_from_embeddings([anchors, positives], None)
    shuffled = loss.compute_loss_from_embeddings([anchors, positives[torch.randperm(16, generator=gen)]], None)
    assert true < shuffled


def test_loss_of_identical_orthogonal_pairs_by_hand():
    # one-hot pairs: the right logit is scale*1, the B-1 others 0 -> CE = log(1 + (B-1) e^-scale)
    emb = torch.eye(4)
    expected = np.log(1 + 3 * np.exp(-2.0))
    loss = mnrl(scale=2.0, symmetric=True).compute_loss_from_embeddings([emb, emb], None).item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_pairs_are_consecutive_items_within_the_window_and_gap():
    events = [Interaction("u", item, float(t), None) for item, t in (("a", 0), ("b", 10), ("c", 20), ("d", 10**9))]
    split = temporal_split(events, list("abcd"), test_fraction=0.0, min_interactions=100)
    assert co_consumption_pairs(split, window=2, max_gap_seconds=100) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_batches_never_repeat_an_item():
    rng = np.random.default_rng(0)
    pairs = [(f"i{a}", f"i{b}") for a, b in rng.integers(0, 40, (300, 2)) if a != b]
    batches = no_duplicate_batches({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]},
                                   batch_size=8, n_batches=50, seed=0)
    assert len(batches) == 50
    for batch in batches:
        items = [item for i in batch for item in pairs[i]]
        assert len(items) == len(set(items)) and len(batch) == 8


def test_batches_from_too_few_items_end_instead_of_looping():
    pairs = [("a", "b"), ("b", "c"), ("c", "d")]
    columns = {"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]}
    assert no_duplicate_batches(columns, batch_size=8, n_batches=5, seed=0) == []  # no full batch exists
    assert all(len(b) == 2 for b in no_duplicate_batches(columns, batch_size=2, n_batches=5, seed=0))


def test_finetune_runs_and_the_saved_encoder_reloads_identically(tmp_path, tiny_backbone_dir):
    encoder = TextEncoder.load("tiny", max_length=32)
    texts = {f"i{n}": f"item {word}" for n, word in enumerate("card transfer order refund pin cash atm fee".split())}
    pairs = [(f"i{a}", f"i{(a + 1) % 8}") for a in range(8)]
    fit = finetune_encoder(encoder, pairs, texts, FinetuneConfig(steps=2, batch_size=4))
    assert fit["steps"] == 2 and all(np.isfinite(fit["losses"]))
    save_encoder(encoder, tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").is_file()
    assert not list((tmp_path / "enc").glob("*.bin"))
    reloaded = TextEncoder.load(tmp_path / "enc", max_length=32)
    sample = list(texts.values())
    assert np.allclose(encoder.encode(sample), reloaded.encode(sample), atol=1e-5)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    assert np.allclose(st.encode(sample), encoder.encode(sample), atol=1e-4)


def test_min_support_keeps_pairs_shared_by_enough_users_once():
    events = [Interaction(u, item, float(t), None) for u, items in (("u", "abc"), ("v", "abx"), ("w", "yz"))
              for t, item in enumerate(items)]
    split = temporal_split(events, list("abcxyz"), test_fraction=0.0, min_interactions=100)
    assert co_consumption_pairs(split, window=1, max_gap_seconds=100, min_support=2) == [("a", "b")]
