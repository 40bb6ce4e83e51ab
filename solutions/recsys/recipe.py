"""The recsys item-encoder recipe: `verticals train recsys/item-encoder` (task: recsys-item-encoder).

Reads top to bottom like the classification recipes: config -> interactions -> co-consumption
pairs -> backbone -> fine-tune on the shared engine (solutions.recsys.finetune, core.engine.loop) ->
a run directory. The run holds `encoder/` (a transformers + sentence-transformers directory,
safetensors) that `verticals recsys index --model RUN` embeds the catalog with, its resolved
`config.yaml` (feed it back to `verticals train` to re-run), `report.json`/`report.md` and the
loss curve. The product model learns from every interaction (no test window is held out here);
ranking quality is measured by `verticals recsys evaluate` and benchmarks/recsys_movielens.py.
Under several processes (`--nproc N`) every process trains and only rank 0 writes the run.
Leaves out: resuming (a run is minutes on CPU; start again with --overwrite), evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core.runs.tracking import TrackingConfig
from core.foundation.settings import setting
from core.foundation.errors import UserError


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


def finetune_config(cfg: ItemEncoderRecipe):
    from solutions.recsys.finetune import FinetuneConfig

    t = cfg.train
    return FinetuneConfig(steps=t.steps, max_seconds=t.max_seconds, batch_size=t.batch_size, lr=t.lr,
                          warmup_fraction=t.warmup, window=t.window, max_gap_seconds=t.max_gap_days * 86400.0,
                          min_support=t.min_support, scale=t.scale, max_length=cfg.model.max_length, seed=t.seed)


def load_data(cfg: ItemEncoderRecipe, data_dir: str | None):
    from core.data.catalog import list_cards
    from solutions.recsys.data import load_interactions

    source = cfg.data.source
    if source not in list_cards() and not Path(source).expanduser().is_file():
        raise UserError(f"unknown dataset '{source}': not a catalog name ({', '.join(list_cards())}) and no such "
                        f"file. Give a catalog name, or your interactions CSV with data.items=ITEMS.csv")
    return load_interactions(source, root=data_dir, items=cfg.data.items or None,
                             item_text_columns=tuple(c.strip() for c in cfg.data.text_columns.split(",") if c.strip()))


def train_item_encoder(cfg: ItemEncoderRecipe, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Fine-tune the item text encoder of `cfg` into `run_dir`; returns the report."""
    from core.foundation import distributed
    from core.models.backbones import load_backbone
    from core.foundation.settings import to_dict
    from core.foundation.cost import CostLedger
    from core.evaluation.metrics import plot_loss_curve
    from core.foundation.device import resolve_device
    from core.runs.rundir import claim_run_dir, environment, read_report, write_config, write_report
    from core.runs.tracking import open_tracker
    from core.foundation.device import seed_everything
    from solutions.recsys.content import TextEncoder
    from solutions.recsys.finetune import co_consumption_pairs, finetune_encoder, save_encoder
    from solutions.recsys.protocol import split_dataset

    if resume:
        raise UserError("recsys item-encoder runs do not resume (a run is minutes); start again with --overwrite")
    run_dir = Path(run_dir)
    tracker = open_tracker(cfg, run_dir)  # before the claim: a missing extra fails before --overwrite clears
    if distributed.is_main():
        claim_run_dir(run_dir, to_dict(cfg), resume=False, overwrite=overwrite, has_checkpoint=False)
    distributed.barrier()
    tracker.start(cfg, run_dir)
    device = resolve_device(cfg.device)
    seed_everything(cfg.train.seed)
    data = load_data(cfg, data_dir)
    ft = finetune_config(cfg)
    split = split_dataset(data, threshold=cfg.data.threshold if cfg.data.threshold >= 0 else None,
                          test_fraction=0.0, min_interactions=10**9)
    pairs = co_consumption_pairs(split, ft.window, ft.max_gap_seconds, ft.min_support)
    if not pairs:
        raise UserError(f"{cfg.data.source}: no co-consumption pairs (users need 2+ positives within "
                        f"{cfg.train.max_gap_days:g} days of each other, shared by {ft.min_support} users); "
                        f"try train.min_support=1")
    encoder = TextEncoder(load_backbone(cfg.model.backbone), ft.max_length)
    with CostLedger() as ledger:
        fit = finetune_encoder(encoder, pairs, data.items, ft, device=device, progress=progress,
                               metric_sinks=(tracker.log_row,))
    if not distributed.is_main():
        distributed.barrier()
        return read_report(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_encoder(encoder, run_dir / "encoder")
    write_config(run_dir, to_dict(cfg))
    cost = ledger.cost
    cost.train_samples = fit["samples"]
    cost.trainable_params = cost.total_params = sum(p.numel() for p in encoder.backbone.encoder.parameters())
    losses = fit["losses"]
    plot_loss_curve([{"step": i + 1, "train_loss": x} for i, x in enumerate(losses)], run_dir / "loss_curve.png",
                    train_rows=fit["pairs"])
    report = {"config": to_dict(cfg), "data": data.summary(),
              "fit": {"steps": fit["steps"], "pairs": fit["pairs"], "samples": fit["samples"],
                      "stopped_by_time": fit["stopped_by_time"], "loss_first": losses[:3], "loss_last": losses[-3:],
                      "processes": distributed.world_size()},
              "cost": cost.to_dict(), **({"tracking": tracker.describe()} if tracker.describe() else {}),
              "environment": environment() | {"device": device}}
    write_report(run_dir, report)
    tracker.finish(report, run_dir, step=fit["steps"])
    distributed.barrier()
    return report
