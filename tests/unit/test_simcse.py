import math

import pytest
import torch

from core.models.backbones import build_tiny_backbone, load_backbone, write_sentence_transformers_files
from core.foundation.errors import UserError
from core.engine.contrastive import mnrl
from core.adapt.simcse import SimCSEConfig, simcse_adapt, simcse_step

TEXTS = ["my card was declined at the shop", "where is my order it has not arrived",
         "how do i reset my password", "my transfer is pending", "i want to cancel my order",
         "what is the exchange rate fee", "the atm kept my card", "why was i charged twice"]
TINY_STEPS = SimCSEConfig(max_steps=3, batch_size=4, lr=1e-3)


def weights(directory):
    from safetensors.torch import load_file

    return load_file(f"{directory}/model.safetensors")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    return simcse_adapt("tiny", TEXTS, tmp_path_factory.mktemp("simcse"), TINY_STEPS, progress=False)


def test_losses_are_finite_and_one_per_step(adapted):
    assert len(adapted.losses) == 3 and all(math.isfinite(x) for x in adapted.losses)
    assert adapted.cost["train_samples"] == 3 * 4 and adapted.cost["tokens_seen"] > 0
    assert adapted.config["objective"] == "simcse" and adapted.config["scale"] == 20.0


def test_output_reloads_with_load_backbone_and_its_weights_changed(adapted):
    reloaded = load_backbone(str(adapted.output_dir))
    source = load_backbone("tiny")
    assert (reloaded.pooling, reloaded.normalize, reloaded.dim) == (source.pooling, source.normalize, 32)
    before, after = weights(source.path), weights(adapted.output_dir)
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    enc = reloaded.tokenizer(["my card was declined"], return_tensors="pt")
    assert torch.isfinite(reloaded.encoder(**enc).last_hidden_state).all()


def test_pooling_and_normalisation_of_the_source_are_kept(tmp_path):
    source = build_tiny_backbone(tmp_path / "cls-tiny")
    write_sentence_transformers_files(source, pooling="cls", normalize=True, max_length=96)
    result = simcse_adapt(str(source), TEXTS, tmp_path / "out", SimCSEConfig(max_steps=1, batch_size=4),
                          progress=False)
    reloaded = load_backbone(str(result.output_dir))
    assert (reloaded.pooling, reloaded.normalize, reloaded.max_length) == ("cls", True, 96)


def test_same_seed_repeats_the_losses_without_touching_the_global_rng(tmp_path):
    cfg = SimCSEConfig(max_steps=2, batch_size=4)
    simcse_adapt("tiny", TEXTS, tmp_path / "warm-up", cfg, progress=False)  # first imports may draw
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = simcse_adapt("tiny", TEXTS, tmp_path / "a", cfg, progress=False)
    assert torch.equal(torch.rand(1), expected)
    assert a.losses == simcse_adapt("tiny", TEXTS, tmp_path / "b", cfg, progress=False).losses


@pytest.mark.parametrize("texts", [[], ["", "   "], ["only one text"], ["same", "same", " same "]])
def test_fewer_than_two_distinct_texts_is_a_user_error(tmp_path, texts):
    with pytest.raises(UserError, match="at least 2 distinct non-empty"):
        simcse_adapt("tiny", texts, tmp_path, TINY_STEPS, progress=False)


def test_batch_of_one_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="batch_size must be >= 2"):
        simcse_adapt("tiny", TEXTS, tmp_path, SimCSEConfig(max_steps=1, batch_size=1), progress=False)


# Component: the loss and the two dropout views.

def test_loss_is_lower_on_identical_pairs_than_on_shuffled_pairs():
    """Hand-made embeddings: one-hot anchors; positives identical vs rotated by one row."""
    loss_fn = mnrl(scale=20.0)
    anchors = torch.eye(4)
    shuffled = anchors.roll(1, dims=0)
    identical = float(loss_fn.compute_loss_from_embeddings([anchors, anchors.clone()], None))
    wrong = float(loss_fn.compute_loss_from_embeddings([anchors, shuffled], None))
    # cosine 1 for the positive, 0 for 3 negatives: -log(e^20 / (e^20 + 3)); shuffled: 20 - log(...)
    assert identical == pytest.approx(math.log(1 + 3 * math.exp(-20)), abs=1e-6)
    assert wrong == pytest.approx(20 + math.log(1 + 3 * math.exp(-20)), abs=1e-4)


def _features(backbone, texts):
    return dict(backbone.tokenizer(texts, padding=True, return_tensors="pt"))


def test_model_loss_is_lower_for_own_positives_than_for_shuffled_ones():
    backbone = load_backbone("tiny")
    step = simcse_step(backbone).eval()
    features = _features(backbone, TEXTS[:4])
    shuffled = {k: v.roll(1, dims=0) for k, v in features.items()}
    with torch.no_grad():
        assert float(step((features, features))) < float(step((features, shuffled)))


def test_two_views_differ_only_in_train_mode():
    backbone = load_backbone("tiny")
    step = simcse_step(backbone)
    features = _features(backbone, TEXTS[:2])

    def embed():
        return step._embed(**features)

    with torch.no_grad():
        step.train()
        assert not torch.allclose(embed(), embed())
        step.eval()
        assert torch.allclose(embed(), embed())
