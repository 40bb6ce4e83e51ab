"""A run directory loads wherever the package is installed: the backbone is recorded by name +
weights checksum, never by the directory it sat in on the training machine."""

import json
import shutil

import numpy as np
import pytest

from core.classify.config import load_recipe_file
from core.foundation.errors import UserError
from core.models.classifier import load_classifier
from core.classify.recipes import run_recipe
from verticals.registry import RECIPES

TEXTS = ["my card was declined", "transfer to another bank", "hello"]


def _train(recipe: str, toy_dir, out, **overrides):
    values = {"backbone": "tiny", "data": str(toy_dir), "max_steps": "2", **overrides}
    run_recipe(load_recipe_file(RECIPES[recipe], values, name=recipe), out, progress=False)
    return out


def _text_files(run):
    return {p: p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".yaml", ".txt")}


@pytest.mark.parametrize("recipe", ["support/intent-lora", "support/intent-probe"])
def test_adapter_and_probe_runs_load_after_the_backbone_moves(recipe, toy_dir, tmp_path, monkeypatch):
    old_cache, new_cache = tmp_path / "old-env-cache", tmp_path / "new-env-cache"
    monkeypatch.setenv("VERTICALS_CACHE", str(old_cache))
    run = _train(recipe, toy_dir, tmp_path / "run")
    before = load_classifier(run / "model").predict_proba(TEXTS)
    for path, text in _text_files(run).items():  # no file of the run names where the backbone was
        assert str(old_cache) not in text, path
    meta = json.loads((run / "model" / "classifier.json").read_text())
    assert meta["backbone"] == "tiny" and len(meta["backbone_sha256"]) == 64
    if (run / "model" / "adapter").is_dir():
        adapter = json.loads((run / "model" / "adapter" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == "tiny"

    # another machine: the run copied elsewhere, the old environment gone, the backbone elsewhere
    moved = shutil.copytree(run, tmp_path / "elsewhere" / "run")
    shutil.rmtree(run)
    shutil.rmtree(old_cache)
    monkeypatch.setenv("VERTICALS_CACHE", str(new_cache))
    after = load_classifier(moved / "model").predict_proba(TEXTS)
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert (new_cache / "backbones").is_dir()  # resolved by name here


def test_a_backbone_with_other_weights_is_refused_by_checksum(toy_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from core.models.backbones import build_tiny_backbone

    run = _train("support/intent-lora", toy_dir, tmp_path / "run")
    monkeypatch.setenv("VERTICALS_CACHE", str(tmp_path / "other-cache"))
    weights_file = build_tiny_backbone() / "model.safetensors"
    weights = load_file(weights_file)
    first = sorted(weights)[0]
    weights[first] = weights[first] + 0.5  # "the same name, another version"
    save_file(weights, weights_file)
    with pytest.raises(UserError, match="trained on backbone 'tiny' with weights sha256 .* a different version"):
        load_classifier(run / "model")


def test_a_local_backbone_directory_is_kept_inside_the_run(toy_dir, tmp_path, tiny_backbone_dir):
    local = shutil.copytree(tiny_backbone_dir, tmp_path / "my-encoder")
    run = _train("support/intent-probe", toy_dir, tmp_path / "run", backbone=str(local))
    before = load_classifier(run / "model").predict_proba(TEXTS)
    meta = json.loads((run / "model" / "classifier.json").read_text())
    assert meta["backbone"] == "my-encoder" and meta["backbone_in_run"] == "backbone"
    assert all(str(local) not in text for path, text in _text_files(run / "model").items())
    shutil.rmtree(local)
    moved = shutil.copytree(run, tmp_path / "elsewhere")
    np.testing.assert_allclose(load_classifier(moved / "model").predict_proba(TEXTS), before, atol=1e-6)
    next((moved / "model" / "backbone").glob("*.safetensors")).write_bytes(b"truncated")
    with pytest.raises(UserError, match="copy of its backbone .* missing or corrupt"):
        load_classifier(moved / "model")


def test_an_old_run_that_recorded_a_backbone_path_loads_while_the_path_exists(toy_dir, tmp_path, tiny_backbone_dir):
    run = _train("support/intent-probe", toy_dir, tmp_path / "run")
    meta_file = run / "model" / "classifier.json"
    meta = json.loads(meta_file.read_text())
    before = load_classifier(run / "model").predict_proba(TEXTS)
    old = {k: v for k, v in meta.items() if k != "backbone_sha256"} | {"format_version": 1}
    meta_file.write_text(json.dumps(old | {"backbone": str(tiny_backbone_dir)}))
    np.testing.assert_allclose(load_classifier(run / "model").predict_proba(TEXTS), before, atol=1e-6)
    meta_file.write_text(json.dumps(old | {"backbone": str(tmp_path / "gone" / "tiny-bert-v2")}))
    with pytest.raises(UserError, match="older verticals that recorded its backbone by the path"):
        load_classifier(run / "model")
