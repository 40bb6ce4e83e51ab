"""The multi-label recipe schema (`task: multilabel-classification`): MultiLabelRecipeConfig.

The model and train sections are the single-label ones (core.classify.config.ModelConfig and
TrainConfig) with three readings that differ: `train.metric` picks the best checkpoint by
`accuracy` = exact-set accuracy at threshold 0.5 (thresholds are chosen after training) or
`macro_f1`; `class_weights` must stay `none`; `label_smoothing` e moves the 0/1 targets to e/2 and
1 - e/2. `model.probe_c_search` is not offered (the one-vs-rest probe fits one model per label).
`mode`: `finetune` trains the encoder (peft none, lora or ia3; frozen trains the head alone) with
BCE on multi-hot targets after a one-vs-rest probe head (head_init=probe); `probe` sets the head
from that probe with no gradient steps.
Leaves out: the schema machinery (core.foundation.settings), the training (core.classify.multilabel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core.classify.config import ModelConfig, TrainConfig
from core.foundation.errors import UserError
from core.foundation.settings import build_config, load_config_file, setting, text_encoding
from core.runs.tracking import TrackingConfig

TASK = "multilabel-classification"


@dataclass(frozen=True)
class MultiLabelDataConfig:
    source: str = setting("", required="a catalog name or a file")  # catalog name, or your CSV/JSONL file or folder
    text_column: str = "text"
    labels_column: str = "labels"  # a|b in CSV, a JSON list in JSONL
    label_column: str = "label"  # read (one label per row) only when the file has no labels column
    encoding: str = setting("utf-8", check=text_encoding)
    train_limit: int = setting(0, minimum=0)  # use only the first N training rows (0 = all), for quick runs
    oos_label: str = ""  # rows labelled only this are out-of-scope examples: never a class, evaluated as OOS


@dataclass(frozen=True)
class MultiLabelRecipeConfig:
    """A multi-label text-classification run (see the module docstring)."""

    ALIASES: ClassVar[dict[str, str]] = {"data": "data.source", "tracking": "tracking.backend"}

    name: str = ""
    description: str = ""
    task: str = setting(TASK, choices=(TASK,))
    mode: str = setting("finetune", choices=("finetune", "probe"))
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))
    data: MultiLabelDataConfig = field(default_factory=MultiLabelDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def check_multilabel_settings(cfg: MultiLabelRecipeConfig) -> None:
    """The single-label settings a multi-label run does not take, refused by name."""
    if cfg.train.class_weights != "none":
        raise UserError("class_weights=balanced is not offered for multi-label runs; leave it at none")
    if cfg.model.probe_c_search:
        raise UserError("probe_c_search is not offered for multi-label runs; set probe_c instead")
    if cfg.mode == "probe" and cfg.model.peft not in ("none", "frozen"):
        raise UserError(f"mode=probe keeps the encoder frozen; peft={cfg.model.peft} needs mode=finetune")


def build_multilabel_recipe(raw: dict, overrides: dict[str, str] | None = None, name: str = ""):
    return build_config(MultiLabelRecipeConfig, raw, overrides, name)


def load_multilabel_recipe(path: Path, overrides: dict[str, str] | None = None, name: str = ""):
    return load_config_file(MultiLabelRecipeConfig, path, overrides, name)
