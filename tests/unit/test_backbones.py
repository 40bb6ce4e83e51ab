import pytest
import torch

from core.backbones import build_tiny_backbone, load_backbone, read_pooling, resolve_backbone
from core.errors import UserError


def test_tiny_backbone_builds_offline_deterministically_without_touching_global_rng(tmp_path):
    build_tiny_backbone(tmp_path / "warm-up")  # first imports of transformers may draw from the RNG
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_backbone(tmp_path / "a")
    after = torch.rand(1)
    b = build_tiny_backbone(tmp_path / "b")
    assert torch.equal(expected, after)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_tiny_backbone_tokenizes_and_encodes():
    bb = load_backbone("tiny")
    enc = bb.tokenizer(["my card was declined"], return_tensors="pt")
    out = bb.encoder(**enc).last_hidden_state
    assert out.shape[-1] == bb.dim == 32 and bb.pooling == "mean"


def test_packaged_minilm_declares_mean_pooling_and_normalisation():
    assert read_pooling(resolve_backbone("minilm")) == ("mean", True, 256)


def test_missing_backbone_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="backbone directory not found"):
        resolve_backbone(str(tmp_path / "nowhere"))
