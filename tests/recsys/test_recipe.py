"""The recsys item-encoder recipe: YAML through the shared config loader, `verticals train
recsys/item-encoder`, a run directory whose encoder `verticals recsys index --model RUN` takes."""

from __future__ import annotations

import pytest

from core.foundation.errors import UserError
from core.foundation.settings import build_config, load_config_file
from solutions.recsys.recipe import finetune_config, train_item_encoder
from solutions.recsys.recipe_config import ItemEncoderRecipe
from solutions.recsys.report import ITEM_ENCODER_REPORT
from verticals import registry
from verticals.recommender import open_encoder_run
from verticals.registry import RECIPES, TASKS


def test_the_registered_recipe_builds_with_dotted_and_flat_overrides():
    task = TASKS["recsys-item-encoder"]
    schema = task.schema
    # the registry's runner imports the recipe when a run starts (the console entry must not load torch)
    assert schema is ItemEncoderRecipe and task.runner is registry.train_item_encoder
    assert task.report is ITEM_ENCODER_REPORT and task.open_run is open_encoder_run
    cfg = load_config_file(schema, RECIPES["recsys/item-encoder"], {"train.steps": "5", "data": "demo_catalog",
                                                                    "min_support": "1"})
    assert (cfg.train.steps, cfg.data.source, cfg.train.min_support) == (5, "demo_catalog", 1)
    ft = finetune_config(cfg)
    assert ft.max_gap_seconds == 7 * 86400 and ft.max_length == cfg.model.max_length == 32


@pytest.mark.parametrize("override, message", [({"train.batch_size": "1"}, "2 or more"),
                                               ({"train.lr": "0"}, "greater than 0"),
                                               ({"train.peft": "lora"}, "unknown key")])
def test_bad_settings_are_refused_by_name(override, message):
    with pytest.raises(UserError, match=message):
        build_config(ItemEncoderRecipe, {"data": {"source": "demo_catalog"}}, override)


def test_recipe_trains_a_run_whose_encoder_reloads(tmp_path, tiny_backbone_dir):
    from core.foundation.settings import read_recipe
    from core.runs.rundir import read_report
    from solutions.recsys.content import TextEncoder

    cfg = build_config(ItemEncoderRecipe, {"data": {"source": "demo_catalog"}, "model": {"backbone": "tiny"},
                                           "train": {"steps": 3, "batch_size": 4, "min_support": 1}})
    report = train_item_encoder(cfg, tmp_path / "run", progress=False)
    assert report["fit"]["steps"] == 3 and report["fit"]["samples"] == 12
    assert read_report(tmp_path / "run")["fit"] == report["fit"]
    assert (tmp_path / "run" / "encoder" / "model.safetensors").is_file()
    assert TextEncoder.load(tmp_path / "run" / "encoder").encode(["a lantern"]).shape == (1, 32)
    again = build_config(ItemEncoderRecipe, read_recipe(tmp_path / "run" / "config.yaml"))
    assert again == cfg  # the run's config.yaml re-runs it
    with pytest.raises(UserError, match="overwrite"):
        train_item_encoder(cfg, tmp_path / "run", progress=False)
