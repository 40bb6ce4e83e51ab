"""The set-autoencoder recipe: `verticals train recsys/set data=...` (task: recsys-set), a run directory
that `verticals recsys index RUN --out DIR` serves through the one index (solutions.recsys.set_recommender).

Reads top to bottom like the ALS and EASE recipes: config -> interactions -> every interaction as
training (as the served model learns from all of them) -> the item texts' vectors (model.encoder,
for the item tables' start) -> the validated run (the training histories cut again in time; early
stopping on its NDCG@10; the test windows of the evaluation protocol are never read here) -> the
refit on every interaction for the best step count -> the run (model/set_autoencoder.safetensors
+ .json, config.yaml, report.json / report.md / README.md with the validation curve, cost).
`--resume` continues the validated run from its last checkpoint (checkpoints/, safetensors); the
refit, a fixed number of steps, runs again.
Leaves out: test-split evaluation (`verticals recsys evaluate`, benchmarks/recsys_movielens.py) and
serving (set_recommender.build_set_index).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from core.engine.checkpoint import has_checkpoint
from core.runs.scaffold import RecipeRun
from solutions.recsys.autoencoder import SetConfig
from solutions.recsys.content import TextEncoder, embed_catalog
from solutions.recsys.protocol import recipe_training_split
from solutions.recsys.recipe_config import SetRecipe
from solutions.recsys.set_recommender import SetRecommender
from solutions.recsys.set_report import SET_REPORT


def set_config(cfg: SetRecipe) -> SetConfig:
    """The network's settings from the recipe's model and train sections."""
    m, t = cfg.model, cfg.train
    return SetConfig(dim=m.dim, dropout=m.dropout, reconstruct_weight=m.reconstruct_weight, max_history=m.max_history,
                     text_init=m.text_init, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
                     weight_decay=t.weight_decay, validate_every=t.validate_every, patience=t.patience,
                     max_seconds=t.max_seconds, refit=t.refit, seed=t.seed)


def train_set(cfg: SetRecipe, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True) -> dict:
    """Train the set autoencoder on every interaction (validated, then refit) and write the run; returns the report."""
    checkpoints = Path(run_dir) / "checkpoints"
    run = RecipeRun.open(cfg, run_dir, resume=resume, overwrite=overwrite, has_checkpoint=has_checkpoint(checkpoints))
    data, split = recipe_training_split(cfg.data, data_dir)
    run.save_config()
    with run.ledger() as ledger:
        text = embed_catalog(TextEncoder.load(cfg.model.encoder), split.items, data.items) if cfg.model.text_init \
            else None
        model = SetRecommender(set_config(cfg), text, device=run.device, progress=progress)
        model.fit(split, checkpoint_dir=checkpoints, resume=run.resuming)
    if not run.is_main:
        return run.wait_for_main()
    model.save(run.run_dir / "model")
    cost = ledger.cost
    cost.trainable_params = cost.total_params = sum(p.numel() for p in model.model.parameters())
    sections = {"data": data.summary(), "fit": model.fit_report,
                "network": asdict(model.cfg) | {"items": len(split.items), "encoder": cfg.model.encoder}}
    return run.write_report(sections, cost=cost, steps=model.fit_report.get("steps", 0), renderer=SET_REPORT)
