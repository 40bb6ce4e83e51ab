"""The recsys recipes' schemas and defaults: the item encoder (task: recsys-item-encoder),
implicit's ALS (task: recsys-als), EASE (task: recsys-ease) and the set autoencoder (task: recsys-set).

The one place the item encoder's defaults are set: the recipe YAML names only what it chooses
(the data), and `finetune.FinetuneConfig`, the `recsys train` flags and the MovieLens benchmark
read the rest from here.

Light on purpose: the app layer's task registry imports it to validate a recipe before anything
trains (`verticals --help` and `verticals train --help` must not load torch). The runner that
trains the item encoder is solutions.recsys.recipe; ALS's is solutions.recsys.als_recipe, EASE's
solutions.recsys.ease_recipe, the set autoencoder's solutions.recsys.set_recipe (its network's
settings, solutions.recsys.autoencoder.SetConfig, take their defaults from SetModel and SetTrain).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from core.foundation.settings import setting
from core.runs.tracking import TrackingConfig


@dataclass(frozen=True)
class ItemEncoderData:
    source: str = setting("", required="a catalog name (movielens_latest_small, demo_catalog) or an interactions CSV")
    items: str = ""  # your own interactions: the items CSV (item_id + text columns)
    text_columns: str = "title"  # your own items CSV: text columns, comma-separated
    threshold: float = -1.0  # ratings >= this are positives; < 0: the catalog's default (3.5 for MovieLens)


@dataclass(frozen=True)
class ItemEncoderModel:
    backbone: str = "minilm"
    max_length: int = setting(32, positive=True)  # item texts (title, genres, tags) are short


@dataclass(frozen=True)
class ItemEncoderTrain:
    steps: int = setting(200, positive=True)  # hard cap: CPU time grows linearly with it
    max_seconds: float = setting(600.0, minimum=0)  # wall-clock cap; 0 = none
    batch_size: int = setting(32, minimum=2)  # every other pair of the batch is a negative
    lr: float = setting(1e-4, positive=True)  # 3e-5 left the loss at chance after 40 steps on MovieLens
    warmup: float = setting(0.1, minimum=0, maximum=1)
    window: int = setting(3, positive=True)  # pair an item with the next `window` items of the same user
    max_gap_days: float = setting(7.0, positive=True)  # ... consumed within this many days of it
    min_support: int = setting(2, positive=True)  # keep pairs that this many users share; 1 = all
    scale: float = setting(20.0, positive=True)  # 1 / temperature of the in-batch softmax
    seed: int = setting(0, minimum=0)


@dataclass(frozen=True)
class ItemEncoderRecipe:
    ALIASES: ClassVar[dict[str, str]] = {"data": "data.source", "tracking": "tracking.backend"}

    name: str = ""
    description: str = ""
    task: str = setting("recsys-item-encoder", choices=("recsys-item-encoder",))
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))
    data: ItemEncoderData = field(default_factory=ItemEncoderData)
    model: ItemEncoderModel = field(default_factory=ItemEncoderModel)
    train: ItemEncoderTrain = field(default_factory=ItemEncoderTrain)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # core.runs.tracking: mlflow | tensorboard


@dataclass(frozen=True)
class ALSModel:
    """implicit's ALS; with `search`, factors / regularization / alpha are chosen on the validation cut."""

    factors: int = setting(64, positive=True)
    regularization: float = setting(0.1, positive=True)
    alpha: float = setting(10.0, positive=True)
    iterations: int = setting(15, positive=True)
    search: bool = True  # choose on the validation cut; the grid widens past an edge the choice sits on
    search_rounds: int = setting(3, minimum=0)  # how many times the grid may widen


@dataclass(frozen=True)
class ALSTrain:
    seed: int = setting(0, minimum=0)


@dataclass(frozen=True)
class ALSRecipe:
    """A recommender run of implicit's ALS (`task: recsys-als`): `verticals recsys index DATA --model RUN` serves it."""

    ALIASES: ClassVar[dict[str, str]] = {"data": "data.source", "tracking": "tracking.backend"}

    name: str = ""
    description: str = ""
    task: str = setting("recsys-als", choices=("recsys-als",))
    device: str = setting("cpu", choices=("cpu",))  # implicit's CPU solver
    data: ItemEncoderData = field(default_factory=ItemEncoderData)
    model: ALSModel = field(default_factory=ALSModel)
    train: ALSTrain = field(default_factory=ALSTrain)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class EASEModel:
    """EASE (Steck 2019); with `search`, l2 is chosen on the validation cut."""

    l2: float = setting(100.0, positive=True)  # taken as is with search=false
    search: bool = True  # choose l2 on the validation cut; the grid widens past an edge the choice sits on
    search_rounds: int = setting(3, minimum=0)  # how many times the grid may widen
    max_items: int = setting(20_000, positive=True)  # items with a training positive; B is 4·n² bytes of float32


@dataclass(frozen=True)
class EASETrain:
    seed: int = setting(0, minimum=0)  # EASE is a closed form: the seed only fixes the run's generators


@dataclass(frozen=True)
class EASERecipe:
    """A recommender run of EASE (`task: recsys-ease`): `verticals recsys index RUN --out DIR` serves it."""

    ALIASES: ClassVar[dict[str, str]] = {"data": "data.source", "tracking": "tracking.backend"}

    name: str = ""
    description: str = ""
    task: str = setting("recsys-ease", choices=("recsys-ease",))
    device: str = setting("cpu", choices=("cpu",))  # a numpy/LAPACK solve
    data: ItemEncoderData = field(default_factory=ItemEncoderData)
    model: EASEModel = field(default_factory=EASEModel)
    train: EASETrain = field(default_factory=EASETrain)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class SetModel:
    """The set autoencoder's network (solutions.recsys.autoencoder)."""

    dim: int = setting(256, positive=True)
    dropout: float = setting(0.5, minimum=0, maximum=0.95)  # share of the input items dropped (denoising)
    reconstruct_weight: float = setting(0.5, minimum=0, maximum=1)  # target weight of the input items; later: 1
    max_history: int = setting(2000, positive=True)  # latest positives a user vector reads
    text_init: bool = True  # start the item tables from the item texts' vectors (principal components)
    encoder: str = "minilm"  # the text encoder of those vectors: a backbone or an item-encoder run's encoder/


@dataclass(frozen=True)
class SetTrain:
    steps: int = setting(1000, positive=True)  # cap on optimizer steps of the validated run
    batch_size: int = setting(64, positive=True)  # users per step
    lr: float = setting(3e-3, positive=True)
    weight_decay: float = setting(0.0, minimum=0)
    validate_every: int = setting(20, positive=True)
    patience: int = setting(10, minimum=0)  # validation passes without improvement (4 stopped too early on MovieLens)
    max_seconds: float = setting(900.0, minimum=0)  # wall-clock cap per training run; 0 = none
    refit: bool = True  # retrain on every interaction for the best step count
    seed: int = setting(0, minimum=0)


@dataclass(frozen=True)
class SetRecipe:
    """A recommender run of the set autoencoder (`task: recsys-set`): `verticals recsys index RUN --out DIR` serves it."""

    ALIASES: ClassVar[dict[str, str]] = {"data": "data.source", "tracking": "tracking.backend"}

    name: str = ""
    description: str = ""
    task: str = setting("recsys-set", choices=("recsys-set",))
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))
    data: ItemEncoderData = field(default_factory=ItemEncoderData)
    model: SetModel = field(default_factory=SetModel)
    train: SetTrain = field(default_factory=SetTrain)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
