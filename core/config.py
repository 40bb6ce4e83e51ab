"""Recipe configuration: YAML + `key=value` overrides -> small frozen dataclasses, validated once.

A recipe YAML has sections (`data`, `model`, `train`) mirroring the dataclasses below. Overrides
on the command line use flat names (`lr=1e-4`, `backbone=tiny`, `data=banking77`), each unique
across sections; an unknown key or a bad value fails here, naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from core.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0  # 0 with max_steps 0 = no gradient steps (e.g. a pure linear probe)
    max_steps: int = 0  # optimizer steps; 0 = derive from epochs
    lr: float = 5e-5  # encoder (or LoRA adapter) learning rate
    head_lr: float = 1e-3
    batch_size: int = 32
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all steps spent warming up
    max_grad_norm: float = 1.0
    class_weights: str = "none"  # none | balanced (n / (k * count), for imbalanced labels)
    label_smoothing: float = 0.0
    eval_every: int = 0  # optimizer steps between validation passes; 0 = once per epoch
    patience: int = 2  # validation passes without improvement before stopping; 0 = never stop early
    metric: str = "accuracy"  # accuracy | macro_f1, picks the best checkpoint
    log_every: int = 10
    seed: int = 0
    # methods the loop can switch on (each is off by default)
    adversarial: str = "none"  # none | fgm | pgd: perturb the input embeddings (core.adversarial)
    adv_epsilon: float = 1.0  # L2 radius of the perturbation, per example
    adv_alpha: float = 0.3  # PGD step size
    adv_steps: int = 3  # PGD ascent steps
    ema_decay: float = 0.0  # 0 = off; e.g. 0.99: validate and keep the EMA of the weights (core.ema)
    layer_decay: float = 1.0  # layer-wise LR decay: layer l of L trains at lr * layer_decay ** (L - l); 1 = off
    unfreeze_every: int = 0  # gradual unfreezing: steps between unfreezing the next layer, top down; 0 = off


@dataclass(frozen=True)
class DataConfig:
    source: str = "banking77"  # catalog name or a path to your CSV/JSONL file or folder
    text_column: str = "text"  # for your own files (catalog cards name their own columns)
    label_column: str = "label"
    encoding: str = "utf-8"
    train_limit: int = 0  # use only the first N training examples (0 = all), for quick runs
    shots: int = 0  # few-shot: keep k training examples per label (seeded by train.seed); 0 = all
    train_fraction: float = 1.0  # low-label runs: keep this stratified share of the training labels (seeded)
    label_names: bool = False  # add each label's name ("card_arrival" -> "card arrival") as one training example
    oos_label: str = "oos"  # rows with this label are out-of-scope examples: never a class, evaluated as OOS ("" = none)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "minilm"
    peft: str = "none"  # none (full fine-tune) | lora | ia3 (peft adapters) | frozen (a linear probe)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    head_init: str = "probe"  # probe (logistic regression on frozen embeddings) | random
    probe_c: float = 10.0  # inverse L2 strength of that probe
    probe_c_search: bool = False  # choose probe_c among 0.1..100 by validation accuracy (frozen embeddings)
    dropout: float = 0.1
    max_length: int = 0  # tokens; 0 = the backbone's own limit
    calibrate: bool = True  # temperature scaling fitted on the validation split
    ood_scorer: str = "knn_energy"  # out-of-scope score: knn_energy | knn | centroid | energy | max_prob | (relative_)mahalanobis | none
    ood_target_recall: float = 0.95  # in-scope share of validation kept above the OOS threshold


@dataclass(frozen=True)
class ContrastiveConfig:
    """SetFit-style contrastive phase on the encoder before the head (core.fewshot); 0 steps = off."""

    contrastive_steps: int = 0
    contrastive_batch_size: int = 32
    contrastive_lr: float = 2e-5
    contrastive_scale: float = 20.0


@dataclass(frozen=True)
class RecipeConfig:
    name: str = ""
    description: str = ""
    task: str = "classification"
    device: str = "cpu"  # cpu | cuda | auto
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "contrastive": ContrastiveConfig, "train": TrainConfig}
ALIASES = {"data": ("data", "source")}  # `data=banking77` sets data.source
CHOICES = {
    "task": ("classification",),
    "device": ("cpu", "cuda", "auto"),
    "peft": ("none", "lora", "ia3", "frozen"),
    "adversarial": ("none", "fgm", "pgd"),
    "head_init": ("probe", "random"),
    "class_weights": ("none", "balanced"),
    "metric": ("accuracy", "macro_f1"),
    "ood_scorer": ("knn_energy", "knn", "centroid", "energy", "max_prob", "mahalanobis", "relative_mahalanobis", "none"),
}
POSITIVE = {"lr", "head_lr", "batch_size", "grad_accum", "probe_c", "contrastive_batch_size",
            "contrastive_lr", "contrastive_scale", "lora_r", "lora_alpha", "log_every", "ood_target_recall",
            "adv_epsilon", "adv_alpha", "adv_steps", "layer_decay", "train_fraction"}
NON_NEGATIVE = {"epochs", "shots", "contrastive_steps", "max_steps", "train_limit", "eval_every", "patience", "max_length", "weight_decay",
                "warmup", "max_grad_norm", "label_smoothing", "dropout", "lora_dropout", "seed",
                "ema_decay", "unfreeze_every"}
BELOW_ONE = {"ema_decay"}


def override_keys() -> dict[str, tuple[str | None, str]]:
    """Flat key -> (section or None for top level, field name)."""
    keys: dict[str, tuple[str | None, str]] = {"device": (None, "device")}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            keys[f.name] = (section, f.name)
    keys.update(ALIASES)
    keys.pop("source", None)
    return keys


def _coerce(key: str, value, kind):
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, kind) if isinstance(kind, str) else kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"bad value for '{key}': {value!r} is not a valid {kind.__name__}") from None


def _check(key: str, value) -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise UserError(f"bad value for '{key}': {value!r}; choose one of {', '.join(CHOICES[key])}")
    if key in POSITIVE and value <= 0:
        raise UserError(f"bad value for '{key}': {value!r}; it must be greater than 0")
    if key in NON_NEGATIVE and value < 0:
        raise UserError(f"bad value for '{key}': {value!r}; it must be 0 or more")
    if key == "train_fraction" and value > 1:
        raise UserError(f"bad value for 'train_fraction': {value!r}; it is a share of the training set, at most 1")
    if key in BELOW_ONE and value >= 1:
        raise UserError(f"bad value for '{key}': {value!r}; it must be below 1 (e.g. 0.99)")
    if key == "encoding":
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise UserError(f"bad value for 'encoding': {value!r} is not a text encoding Python knows "
                            f"(e.g. utf-8, latin-1, cp1252)") from None


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in {where}; valid keys: {', '.join(valid)}")
    out = {}
    for name, value in values.items():
        out[name] = _coerce(name, value, hints[name])
        _check(name, out[name])
    return cls(**out)


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not key=value (e.g. epochs=2 lr=1e-4)")
        out[key.strip()] = value.strip()
    return out


FILE_KEYS = ("text_column", "label_column", "encoding")  # how to read a file: what `verticals eval` takes


def parse_file_options(items: list[str]) -> dict[str, str]:
    """`text_column=body label_column=queue encoding=latin-1`: how `verticals eval` reads a data
    file (the same keys, and so the same advice in error messages, as `verticals train`)."""
    values = parse_overrides(items)
    for key, value in values.items():
        if key not in FILE_KEYS:
            raise UserError(f"unknown key '{key}' for eval; it takes {', '.join(k + '=' for k in FILE_KEYS)} "
                            f"(how to read --data files)")
        if not value:
            raise UserError(f"bad value for '{key}': it is empty")
        _check(key, value)
    return values


def build_recipe(raw: dict, overrides: dict[str, str] | None = None, name: str = "") -> RecipeConfig:
    """Recipe dict (from YAML) + flat overrides -> a validated RecipeConfig."""
    raw = dict(raw or {})
    sections = {s: dict(raw.pop(s, None) or {}) for s in SECTIONS}
    if isinstance(raw.get("data"), str):
        sections["data"]["source"] = raw.pop("data")
    top_valid = [f.name for f in fields(RecipeConfig) if f.name not in SECTIONS]
    unknown = sorted(set(raw) - set(top_valid))
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in recipe {name}; valid top-level keys: "
                        f"{', '.join(top_valid + list(SECTIONS))}")
    keys = override_keys()
    for key, value in (overrides or {}).items():
        if key not in keys:
            raise UserError(f"unknown key '{key}'; valid keys: {', '.join(sorted(keys))}")
        section, field_name = keys[key]
        if section is None:
            raw[field_name] = value
        else:
            sections[section][field_name] = value
    top = {k: _coerce(k, v, str) for k, v in raw.items()}
    for k, v in top.items():
        _check(k, v)
    built = {s: _build(cls, sections[s], f"{name or 'recipe'} section '{s}'") for s, cls in SECTIONS.items()}
    return RecipeConfig(**{"name": name, **top, **built})


def read_yaml_mapping(path: Path, what: str, shape: str) -> dict:
    """A YAML file that must hold a mapping (watchlists, rule files, routing tables); UserError
    naming `what` and the expected `shape` when it is missing, unparsable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}. It is a YAML mapping {shape}.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{what} {path} must be a mapping {shape}")
    return raw


def load_recipe_file(path: Path, overrides: dict[str, str] | None = None, name: str = "") -> RecipeConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {path} is not valid YAML: {exc}") from None
    return build_recipe(raw, overrides, name or Path(path).stem)


def to_dict(cfg: RecipeConfig) -> dict:
    return dataclasses.asdict(cfg)
