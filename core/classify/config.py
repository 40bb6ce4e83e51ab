"""The classification recipe schema: RecipeConfig and its sections (data, model, train, contrastive,
zero-shot, static, tracking), built and validated by core.foundation.settings.

`build_recipe(raw, overrides)` / `load_recipe_file(path, overrides)` give a frozen RecipeConfig
from a recipe's YAML plus `key=value` overrides; `parse_file_options` checks how `verticals eval`
reads a data file with DataConfig's own rules.
Leaves out: the schema machinery (core.foundation.settings) and finding a recipe by name (the app
layer: verticals.recipe_files).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from core.foundation.errors import UserError
from core.foundation.precision import SETTINGS as PRECISION_SETTINGS
from core.foundation.settings import build_config, checked, load_config_file, parse_overrides, setting, text_encoding
from core.runs.tracking import TrackingConfig

OOD_SCORERS = ("knn_energy", "knn", "centroid", "energy", "max_prob", "mahalanobis", "relative_mahalanobis", "none")


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = setting(3.0, minimum=0)  # 0 with max_steps 0 = no gradient steps (e.g. a pure linear probe)
    max_steps: int = setting(0, minimum=0)  # optimizer steps; 0 = derive from epochs
    # stop after this many steps, the schedule still spanning all of them: the run's first steps, exactly; 0 = all
    stop_after: int = setting(0, minimum=0)
    lr: float = setting(5e-5, positive=True)  # encoder (or LoRA adapter) learning rate
    head_lr: float = setting(1e-3, positive=True)
    batch_size: int = setting(32, positive=True)
    grad_accum: int = setting(1, positive=True)
    weight_decay: float = setting(0.01, minimum=0)
    warmup: float = setting(0.1, minimum=0)  # fraction of all steps spent warming up
    max_grad_norm: float = setting(1.0, minimum=0)
    class_weights: str = setting("none", choices=("none", "balanced"))  # balanced: n / (k * count)
    label_smoothing: float = setting(0.0, minimum=0)
    eval_every: int = setting(0, minimum=0)  # optimizer steps between validation passes; 0 = once per epoch
    patience: int = setting(2, minimum=0)  # validation passes without improvement before stopping; 0 = never
    metric: str = setting("accuracy", choices=("accuracy", "macro_f1"))  # picks the best checkpoint
    log_every: int = setting(10, positive=True)
    seed: int = setting(0, minimum=0)
    # methods the loop can switch on (each is off by default)
    adversarial: str = setting("none", choices=("none", "fgm", "pgd"))  # perturb input embeddings (core.engine.adversarial)
    adv_epsilon: float = setting(1.0, positive=True)  # L2 radius of the perturbation, per example
    adv_alpha: float = setting(0.3, positive=True)  # PGD step size
    adv_steps: int = setting(3, positive=True)  # PGD ascent steps
    ema_decay: float = setting(0.0, minimum=0, below=1, hint="e.g. 0.99")  # 0 = off; keep the EMA of the weights
    layer_decay: float = setting(1.0, positive=True)  # layer l of L trains at lr * layer_decay ** (L - l); 1 = off
    unfreeze_every: int = setting(0, minimum=0)  # gradual unfreezing, top down: steps between layers; 0 = off
    # how the engine batches and computes (core.classify.train, core.engine.loop)
    group_by_length: bool = True  # batches of similar token length (less padding); false = plain random batches
    # auto: bf16/fp16 on a GPU, bf16 on a CPU with native bf16, else fp32; bf16: forced (core.foundation.precision)
    mixed_precision: str = setting("auto", choices=PRECISION_SETTINGS)


@dataclass(frozen=True)
class DataConfig:
    source: str = setting("", required="a catalog name or a file")  # catalog name, or your CSV/JSONL file or folder
    text_column: str = "text"  # for your own files (catalog cards name their own columns)
    label_column: str = "label"
    encoding: str = setting("utf-8", check=text_encoding)
    train_limit: int = setting(0, minimum=0)  # use only the first N training examples (0 = all), for quick runs
    shots: int = setting(0, minimum=0)  # few-shot: keep k training examples per label (seeded by train.seed); 0 = all
    train_fraction: float = setting(1.0, positive=True, maximum=1, hint="a share of the training set")
    label_names: bool = False  # add each label's name ("card_arrival" -> "card arrival") as one training example
    oos_label: str = ""  # rows with this label are out-of-scope examples: never a class, evaluated as OOS; "" = none


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "minilm"
    peft: str = setting("none", choices=("none", "lora", "ia3", "frozen"))  # frozen = a linear probe
    lora_r: int = setting(8, positive=True)
    lora_alpha: int = setting(16, positive=True)
    lora_dropout: float = setting(0.1, minimum=0)
    head_init: str = setting("probe", choices=("probe", "random"))  # probe: logistic regression on frozen embeddings
    probe_c: float = setting(10.0, positive=True)  # inverse L2 strength of that probe
    probe_c_search: bool = False  # choose probe_c among 0.1..100 by validation accuracy (frozen embeddings)
    dropout: float = setting(0.1, minimum=0)
    max_length: int = setting(0, minimum=0)  # tokens; 0 = the backbone's own limit
    calibrate: bool = True  # temperature scaling fitted on the validation split
    ood_scorer: str = setting("none", choices=OOD_SCORERS)  # out-of-scope score; none = no OOS detection
    ood_target_recall: float = setting(0.95, positive=True)  # in-scope share of validation kept above the threshold


@dataclass(frozen=True)
class ContrastiveConfig:
    """SetFit-style contrastive phase on the encoder before the head (core.classify.fewshot); 0 steps = off."""

    contrastive_steps: int = setting(0, minimum=0)
    contrastive_batch_size: int = setting(32, positive=True)
    contrastive_lr: float = setting(2e-5, positive=True)
    contrastive_scale: float = setting(20.0, positive=True)


@dataclass(frozen=True)
class ZeroShotConfig:
    """Zero-shot routing: each label's descriptions are embedded and compared with the text."""

    descriptions: str = ""  # YAML file: label -> list of descriptions; "" = use the label names
    temperature: float = setting(0.05, positive=True)  # softmax temperature over cosine similarities


@dataclass(frozen=True)
class StaticConfig:
    """The static-embedding tier (`mode: static`, core.classify.static): a model2vec table distilled
    from `source`, then a logistic-regression head on it (model.probe_c, model.probe_c_search)."""

    source: str = ""  # "" = model.backbone; or a run directory: distil its fine-tuned encoder (LoRA merged)
    pca_dims: int = setting(256, minimum=0)  # PCA dimensions of the table (at most the encoder's); 0 = keep its width
    sif_coefficient: float = setting(1e-4, positive=True, below=1)  # token weights a / (a + p(token)) (SIF)
    max_length: int = setting(512, positive=True)  # tokens read per text (model2vec cuts longer texts)


@dataclass(frozen=True)
class RecipeConfig:
    """A text-classification run (`task: classification`); `mode` picks the recipe function."""

    # `data=banking77` sets data.source; `tracking=mlflow` sets tracking.backend
    ALIASES: ClassVar[dict[str, str]] = {"data": "data.source", "tracking": "tracking.backend"}

    name: str = ""
    description: str = ""
    task: str = setting("classification", choices=("classification",))
    mode: str = setting("finetune", choices=("probe", "finetune", "fewshot", "zeroshot", "static"))
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    static: StaticConfig = field(default_factory=StaticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def build_recipe(raw: dict, overrides: dict[str, str] | None = None, name: str = "") -> RecipeConfig:
    """Recipe dict (from YAML) + overrides -> a validated classification RecipeConfig."""
    return build_config(RecipeConfig, raw, overrides, name)


def load_recipe_file(path: Path, overrides: dict[str, str] | None = None, name: str = "") -> RecipeConfig:
    return load_config_file(RecipeConfig, path, overrides, name)


FILE_KEYS = ("text_column", "label_column", "encoding")  # how to read a file: what `verticals eval` takes


def parse_file_options(items: list[str]) -> dict[str, str]:
    """`text_column=body label_column=queue encoding=latin-1`: how `verticals eval` reads a data
    file (the same keys, rules and messages as DataConfig in `verticals train`)."""
    values = parse_overrides(items)
    data_fields = {f.name: f for f in fields(DataConfig)}
    for key, value in values.items():
        if key not in FILE_KEYS:
            raise UserError(f"unknown key '{key}' for eval; it takes {', '.join(k + '=' for k in FILE_KEYS)} "
                            f"(how to read --data files)")
        if not value:
            raise UserError(f"bad value for '{key}': it is empty")
        checked(key, value, str, data_fields[key])
    return values
