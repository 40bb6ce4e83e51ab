import numpy as np
import pytest
import torch

from core.models.backbones import load_backbone
from core.data.splits import Split
from core.engine.contrastive import mnrl, no_duplicate_batches
from core.classify.config import ContrastiveConfig
from core.classify.fewshot import class_pairs, fit_contrastive, sample_per_class
from core.models.classifier import build_classifier
from tests.conftest import CARD, TRANSFER


def test_sample_per_class_keeps_k_of_each_label_and_is_seeded():
    split = Split([f"t{i}" for i in range(12)], ["a"] * 8 + ["b"] * 3 + ["c"])
    one = sample_per_class(split, 2, np.random.default_rng(3))
    assert sorted(one.labels) == ["a", "a", "b", "b", "c"]
    assert one == sample_per_class(split, 2, np.random.default_rng(3))


def test_class_pairs_batched_without_duplicates_never_repeat_a_class_in_a_batch():
    labels = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["solo"]
    anchors, positives = class_pairs(labels, 60, np.random.default_rng(0))
    assert all(labels[a] == labels[p] and a != p and labels[a] != "solo" for a, p in zip(anchors, positives))
    batches = no_duplicate_batches({"anchor": [f"t{a}" for a in anchors], "positive": [f"t{p}" for p in positives],
                                    "class": [labels[a] for a in anchors]}, batch_size=3, n_batches=20, seed=0)
    assert len(batches) == 20
    for batch in batches:
        classes = [labels[anchors[i]] for i in batch]
        assert len(batch) == 3 and len(set(classes)) == 3


def test_mnrl_loss_is_lower_on_true_pairs_than_shuffled():
    loss = mnrl(scale=1.0)
    anchors = torch.eye(4)
    true = loss.compute_loss_from_embeddings([anchors, anchors], None)
    assert true < loss.compute_loss_from_embeddings([anchors, anchors[[1, 2, 3, 0]]], None)
    # orthogonal unit vectors, scale 1: each row is -log(e^1 / (e^1 + 3 e^0))
    expected = -np.log(np.e / (np.e + 3))
    assert true.item() == pytest.approx(expected, rel=1e-5)
    symmetric = mnrl(scale=1.0, symmetric=True).compute_loss_from_embeddings([anchors, anchors], None)
    assert symmetric.item() == pytest.approx(expected, rel=1e-5)  # same both ways for identical sides


def test_contrastive_phase_pulls_same_class_texts_together():
    torch.manual_seed(0)
    model = build_classifier(load_backbone("tiny"), ["card", "transfer"])
    train = Split(CARD + TRANSFER, ["card"] * len(CARD) + ["transfer"] * len(TRANSFER))

    def separation():
        emb = model.encode(train.texts)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        sims = emb @ emb.T
        same = np.equal.outer(np.array(train.labels), np.array(train.labels))
        return sims[same].mean() - sims[~same].mean()

    before = separation()
    losses = fit_contrastive(model, train, ContrastiveConfig(contrastive_steps=30, contrastive_batch_size=2, contrastive_lr=1e-3), progress=False)
    assert separation() > before and np.mean(losses[-5:]) < np.mean(losses[:5])


def test_label_names_become_one_extra_example_each():
    from core.classify.fewshot import with_label_name_examples

    split = Split(["where is my card", "send money"], ["card_arrival", "transfer-money"])
    out = with_label_name_examples(split, ["card_arrival", "transfer-money", "top__up"])
    assert out.texts[:2] == split.texts and out.labels[:2] == split.labels
    assert list(zip(out.texts[2:], out.labels[2:])) == [("card arrival", "card_arrival"),
                                                        ("transfer money", "transfer-money"), ("top up", "top__up")]
