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

from pathlib import Path

from core.evaluation.metrics import plot_loss_curve
from core.foundation.distributed import world_size
from core.foundation.errors import UserError
from core.models.backbones import load_backbone
from core.runs.scaffold import RecipeRun
from solutions.recsys.content import TextEncoder
from solutions.recsys.data import load_recipe_data
from solutions.recsys.finetune import FinetuneConfig, co_consumption_pairs, finetune_encoder, save_encoder
from solutions.recsys.protocol import training_split
from solutions.recsys.recipe_config import ItemEncoderRecipe
from solutions.recsys.report import ITEM_ENCODER_REPORT


def finetune_config(cfg: ItemEncoderRecipe):
    t = cfg.train
    return FinetuneConfig(steps=t.steps, max_seconds=t.max_seconds, batch_size=t.batch_size, lr=t.lr,
                          warmup_fraction=t.warmup, window=t.window, max_gap_seconds=t.max_gap_days * 86400.0,
                          min_support=t.min_support, scale=t.scale, max_length=cfg.model.max_length, seed=t.seed)


def train_item_encoder(cfg: ItemEncoderRecipe, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Fine-tune the item text encoder of `cfg` into `run_dir`; returns the report."""
    if resume:
        raise UserError("recsys item-encoder runs do not resume (a run is minutes); start again with --overwrite")
    run = RecipeRun.open(cfg, run_dir, resume=False, overwrite=overwrite, has_checkpoint=False)
    data = load_recipe_data(cfg.data, data_dir)
    ft = finetune_config(cfg)
    split = training_split(data, threshold=cfg.data.threshold if cfg.data.threshold >= 0 else None)
    pairs = co_consumption_pairs(split, ft.window, ft.max_gap_seconds, ft.min_support)
    if not pairs:
        raise UserError(f"{cfg.data.source}: no co-consumption pairs (users need 2+ positives within "
                        f"{cfg.train.max_gap_days:g} days of each other, shared by {ft.min_support} users); "
                        f"try train.min_support=1")
    encoder = TextEncoder(load_backbone(cfg.model.backbone), ft.max_length)
    with run.ledger() as ledger:
        fit = finetune_encoder(encoder, pairs, data.items, ft, device=run.device, progress=progress,
                               metric_sinks=(run.tracker.log_row,))
    if not run.is_main:
        return run.wait_for_main()
    save_encoder(encoder, run.run_dir / "encoder")
    run.save_config()
    cost = ledger.cost
    cost.train_samples = fit["samples"]
    cost.trainable_params = cost.total_params = sum(p.numel() for p in encoder.backbone.encoder.parameters())
    losses = fit["losses"]
    plot_loss_curve([{"step": i + 1, "train_loss": x} for i, x in enumerate(losses)], run.run_dir / "loss_curve.png",
                    train_rows=fit["pairs"])
    fit_section = {"steps": fit["steps"], "pairs": fit["pairs"], "samples": fit["samples"],
                   "stopped_by_time": fit["stopped_by_time"], "loss_first": losses[:3], "loss_last": losses[-3:],
                   "processes": world_size()}
    return run.write_report({"data": data.summary(), "fit": fit_section}, cost=cost, steps=fit["steps"],
                            renderer=ITEM_ENCODER_REPORT)
