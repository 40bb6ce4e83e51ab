"""The generic config builder (dotted paths, aliases, sections, round trip) and every recipe YAML."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from core.classify.config import RecipeConfig, build_recipe
from core.foundation.settings import build_config, leaf_fields, override_keys, read_recipe, rule_of, setting, to_dict
from core.foundation.errors import UserError
from verticals.registry import RECIPES, TASKS

REPO = Path(__file__).resolve().parents[2]
RECIPE_FILES = sorted(REPO.glob("solutions/*/recipes/*.yaml"))


@dataclass(frozen=True)
class Optimizer:
    lr: float = setting(0.1, positive=True)
    steps: int = setting(10, minimum=0)


@dataclass(frozen=True)
class Tower:
    lr: float = setting(0.01, positive=True)  # `lr` is in two sections: only the dotted path names it
    width: int = setting(4, positive=True)
    optimizer: Optimizer = field(default_factory=Optimizer)


@dataclass(frozen=True)
class TwoTowers:
    """A schema another task might bring: nested sections, a name shared by two sections."""

    name: str = ""
    kind: str = setting("dual", choices=("dual", "shared"))
    query: Tower = field(default_factory=Tower)
    item: Tower = field(default_factory=Tower)


# ---------------------------------------------------------------- the generic builder

def test_generic_builder_reads_nested_sections_and_dotted_overrides():
    cfg = build_config(TwoTowers, {"query": {"width": 8, "optimizer": {"lr": "0.5"}}},
                       {"item.lr": "0.2", "item.optimizer.steps": "3", "kind": "shared"}, name="towers")
    assert cfg == TwoTowers(name="towers", kind="shared", query=Tower(width=8, optimizer=Optimizer(lr=0.5)),
                            item=Tower(lr=0.2, optimizer=Optimizer(steps=3)))


def test_a_name_in_two_sections_is_not_a_flat_alias():
    keys = override_keys(TwoTowers)
    assert "lr" not in keys and "width" not in keys  # width is in query and item
    assert keys["query.optimizer.lr"] == "query.optimizer.lr" and keys["kind"] == "kind"
    with pytest.raises(UserError, match=r"unknown key 'lr'; valid keys: .*item\.lr.*query\.lr"):
        build_config(TwoTowers, {}, {"lr": "0.3"})


def test_rules_declared_on_the_fields_apply_in_any_schema():
    with pytest.raises(UserError, match=r"bad value for 'query.optimizer.steps': -1; it must be 0 or more"):
        build_config(TwoTowers, {}, {"query.optimizer.steps": "-1"})
    with pytest.raises(UserError, match=r"bad value for 'item.width': 0; it must be greater than 0"):
        build_config(TwoTowers, {"item": {"width": 0}}, {})


def test_every_check_lives_on_its_field():
    """The choices and bounds of RecipeConfig are field metadata, not side tables in the module."""
    import core.foundation.settings

    assert not {"CHOICES", "POSITIVE", "NON_NEGATIVE", "BELOW_ONE"} & set(vars(core.foundation.settings))
    rules = {path: rule_of(f) for path, (_, f) in leaf_fields(RecipeConfig).items()}
    assert rules["train.lr"].positive and rules["train.ema_decay"].below == 1
    assert rules["model.peft"].choices == ("none", "lora", "ia3", "frozen")
    assert rules["data.source"].required


def test_scalar_given_where_a_section_belongs_and_a_list_for_a_scalar_are_rejected():
    with pytest.raises(UserError, match=r"'train' in recipe is a section: a mapping of its keys \(epochs, "):
        build_recipe({"train": 5, "data": "x.csv"})
    with pytest.raises(UserError, match=r"bad value for 'train.lr': expected one float, got a list"):
        build_recipe({"train": {"lr": [1, 2]}, "data": "x.csv"})
    with pytest.raises(UserError, match=r"unknown key 'trian' in recipe r; valid keys: .*Did you mean 'train'\?"):
        build_recipe({"trian": {}}, name="r")
    with pytest.raises(UserError, match=r"unknown key 'lr' in recipe r: it belongs in section 'train' \(train.lr\)"):
        build_recipe({"lr": 1e-4}, name="r")
    with pytest.raises(UserError, match=r"unknown key 'peft' in recipe section 'train': it belongs in section 'model'"):
        build_recipe({"train": {"peft": "lora"}})


# ---------------------------------------------------------------- classification keys

def test_dotted_paths_and_flat_aliases_set_the_same_fields():
    dotted = build_recipe({}, {"train.lr": "1e-4", "model.peft": "lora", "data.source": "banking77",
                               "data.oos_label": "oos", "zeroshot.temperature": "0.1", "mode": "zeroshot"})
    flat = build_recipe({}, {"lr": "1e-4", "peft": "lora", "data": "banking77", "oos_label": "oos",
                             "temperature": "0.1", "mode": "zeroshot"})
    assert dotted == flat
    assert (dotted.train.lr, dotted.model.peft, dotted.data.source) == (1e-4, "lora", "banking77")
    assert (dotted.data.oos_label, dotted.zeroshot.temperature, dotted.mode) == ("oos", 0.1, "zeroshot")


def test_core_defaults_are_neutral():
    cfg = build_recipe({"data": "x.csv"})
    assert (cfg.task, cfg.mode, cfg.data.oos_label, cfg.model.ood_scorer) == ("classification", "finetune", "", "none")
    assert (cfg.zeroshot.descriptions, cfg.zeroshot.temperature) == ("", 0.05)


def test_data_source_is_required():
    with pytest.raises(UserError, match=r"data.source \(data=\) is required: a catalog name or a file"):
        build_recipe({"train": {"lr": 1e-4}}, {"epochs": "1"})
    assert build_recipe({}, {"data": "banking77"}).data.source == "banking77"


def test_yaml_name_is_kept_and_the_given_name_fills_an_empty_one():
    assert build_recipe({"data": "x.csv"}, name="support/intent-lora").name == "support/intent-lora"
    assert build_recipe({"name": "saved", "data": "x.csv"}, name="config").name == "saved"


# ---------------------------------------------------------------- every recipe YAML in the repo

def _schema_of(path: Path):
    raw = read_recipe(path)
    task = raw.get("task", "classification")
    assert task in TASKS, f"{path}: task '{task}' is not in verticals.registry.TASKS"
    return TASKS[task].schema, raw


def test_every_recipe_yaml_is_in_the_registry_and_every_registered_recipe_exists():
    assert {p.resolve() for p in RECIPE_FILES} == {Path(p).resolve() for p in RECIPES.values()}


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_recipe_yaml_validates_and_its_resolved_config_round_trips(path, tmp_path):
    from core.runs.rundir import write_config

    schema, raw = _schema_of(path)
    assert "mode" in raw or schema is not RecipeConfig, f"{path} does not state its mode"
    cfg = build_config(schema, raw, {}, name=path.stem)
    again = build_config(schema, read_recipe(write_config(tmp_path, to_dict(cfg))), {}, name="config")
    assert again == cfg


# What each classification recipe resolves to, beyond its YAML's own lines: support recipes switch
# OOS detection on, finance ones keep the neutral core defaults (no OOS label, no OOS scorer).
EXPECTED = {
    "support/intent-full": ("finetune", "banking77", "none"),
    "support/intent-lora": ("finetune", "banking77", "lora"),
    "support/intent-demo": ("finetune", "demo_support", "lora"),
    "support/intent-probe": ("probe", "banking77", "frozen"),
    "support/intent-probe-mpnet": ("probe", "banking77", "frozen"),
    "support/intent-fewshot": ("fewshot", "banking77", "none"),
    "finance/sentiment-full": ("finetune", "financial_phrasebank", "none"),
    "finance/sentiment-lora": ("finetune", "financial_phrasebank", "lora"),
    "support/intent-static": ("static", "banking77", "frozen"),
    "finance/sentiment-static": ("static", "financial_phrasebank", "frozen"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_modes_sources_and_out_of_scope_settings(name):
    cfg = build_config(RecipeConfig, read_recipe(RECIPES[name]), {}, name=name)
    assert cfg.name == name and cfg.description
    assert (cfg.mode, cfg.data.source, cfg.model.peft) == EXPECTED[name]
    if name.startswith("support/"):
        assert (cfg.data.oos_label, cfg.model.ood_scorer) == ("oos", "knn_energy")
    else:
        assert (cfg.data.oos_label, cfg.model.ood_scorer) == ("", "none")


def test_the_saved_config_of_an_older_run_still_builds():
    """A run's config.yaml written before `mode` and `zeroshot` existed reads with their defaults."""
    saved = to_dict(build_recipe({"data": "x.csv"}, name="old"))
    del saved["mode"], saved["zeroshot"]
    assert build_recipe(yaml.safe_load(yaml.safe_dump(saved))) == build_recipe({"data": "x.csv"}, name="old")
