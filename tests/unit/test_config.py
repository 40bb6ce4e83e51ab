"""Classification config: flat override aliases, the rules declared on the fields, file options.
(Dotted paths, the generic builder and every recipe YAML: test_config_build.py.)"""

import pytest

from core.classify.config import build_recipe
from core.foundation.settings import parse_overrides
from core.foundation.errors import UserError


def test_flat_overrides_land_in_their_sections():
    cfg = build_recipe({"train": {"lr": "5.0e-5"}}, parse_overrides(
        ["epochs=2", "lr=1e-4", "backbone=tiny", "data=demo_support", "train_limit=50", "peft=lora", "seed=3"]))
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.seed) == (2.0, 1e-4, 3)
    assert (cfg.model.backbone, cfg.model.peft) == ("tiny", "lora")
    assert (cfg.data.source, cfg.data.train_limit) == ("demo_support", 50)


def test_unknown_override_key_lists_the_valid_keys():
    with pytest.raises(UserError, match=r"unknown key 'learning_rate'; valid keys: .*train\.batch_size.*train\.lr\b"):
        build_recipe({}, {"learning_rate": "1e-4"})


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(UserError, match=r"unknown key 'epoch'.*Did you mean 'epochs'\?"):
        build_recipe({}, {"epoch": "2"})
    with pytest.raises(UserError, match=r"unknown key 'train.lrr'.*Did you mean 'train.lr'\?"):
        build_recipe({}, {"train.lrr": "1"})


@pytest.mark.parametrize("key,value,message", [
    ("lr", "fast", "not a valid float"),
    ("epochs", "-1", "0 or more"),
    ("lr", "0", "greater than 0"),
    ("batch_size", "2.5", "not a valid int"),
    ("peft", "adapter", "choose one of none, lora"),
    ("class_weights", "sometimes", "choose one of none, balanced"),
    ("encoding", "klingon", "not a text encoding Python knows"),
    ("train_fraction", "1.5", r"at most 1 \(a share of the training set\)"),
    ("ema_decay", "1", r"below 1 \(e.g. 0.99\)"),
    ("mode", "distill", "choose one of probe, finetune, fewshot, zeroshot"),
    ("zeroshot.temperature", "0", "greater than 0"),
    ("ood_scorer", "lof", "choose one of knn_energy"),
    ("label_names", "maybe", "not a valid bool"),
])
def test_bad_values_are_rejected_with_the_reason(key, value, message):
    with pytest.raises(UserError, match=message):
        build_recipe({}, {key: value})


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(UserError, match="not key=value"):
        parse_overrides(["epochs"])


def test_unknown_key_inside_a_recipe_file_is_rejected():
    with pytest.raises(UserError, match="unknown key 'lrate' in recipe section 'train'"):
        build_recipe({"train": {"lrate": 1}})


def test_eval_file_options_take_only_the_keys_that_say_how_to_read_a_file():
    from core.classify.config import parse_file_options

    assert parse_file_options(["text_column=body", "encoding=latin-1"]) == {"text_column": "body", "encoding": "latin-1"}
    with pytest.raises(UserError, match="unknown key 'lr' for eval; it takes text_column=, label_column=, encoding="):
        parse_file_options(["lr=1"])
    with pytest.raises(UserError, match="not a text encoding"):
        parse_file_options(["encoding=nope"])
