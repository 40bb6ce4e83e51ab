"""core.adapt.mlm on the tiny backbone: MLM loss goes down, the output is a loadable, changed backbone."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from core.adapt.mlm import AdaptConfig, adapt_backbone
from core.models.backbones import load_backbone
from core.foundation.errors import UserError

CORPUS = ["the company reported strong quarterly earnings and raised its guidance",
          "shares fell sharply after the bank disclosed losses",
          "profit rose percent revenue increased operating margin improved"]


def test_mlm_loss_goes_down_and_output_is_a_changed_backbone(tmp_path, tiny_backbone_dir):
    cfg = AdaptConfig(max_steps=25, head_warmup_steps=5, batch_size=6, lr=3e-3, head_lr=3e-3, warmup=0.0)
    result = adapt_backbone("tiny", CORPUS * 8, tmp_path / "adapted", cfg, progress=False)
    assert result.head_was_fresh  # the tiny backbone, like MiniLM, ships no MLM head
    assert len(result.losses) == 5 + 25
    assert np.mean(result.losses[-6:]) < np.mean(result.losses[:6])
    reloaded = load_backbone(str(tmp_path / "adapted"))
    assert reloaded.pooling == "mean" and reloaded.dim == 32
    before = load_file(tiny_backbone_dir / "model.safetensors")
    after = load_file(tmp_path / "adapted" / "model.safetensors")
    assert set(before) <= set(after)
    changed = [k for k in before if not np.allclose(before[k].numpy(), after[k].numpy())]
    assert "encoder.layer.0.attention.self.query.weight" in changed
    assert not list(tmp_path.glob("adapted/*.bin"))  # safetensors only
    assert result.cost["wall_seconds"] > 0


def test_adaptation_is_seeded(tmp_path):
    cfg = AdaptConfig(max_steps=3, head_warmup_steps=2, batch_size=4)
    a = adapt_backbone("tiny", CORPUS * 4, tmp_path / "a", cfg, progress=False)
    b = adapt_backbone("tiny", CORPUS * 4, tmp_path / "b", cfg, progress=False)
    assert a.losses == pytest.approx(b.losses)


def test_adaptation_without_texts_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="needs unlabelled texts"):
        adapt_backbone("tiny", ["  "], tmp_path / "x", progress=False)
