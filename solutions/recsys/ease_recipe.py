"""The EASE recipe: `verticals train recsys/ease data=...` (task: recsys-ease), a run directory that
`verticals recsys index RUN --out DIR` serves by scoring (solutions.recsys.ease_index).

Reads top to bottom like the ALS recipe (solutions.recsys.als_recipe): config -> interactions ->
every interaction as training (as the served model learns from all of them) -> l2 chosen on the
validation cut (the training histories cut again in time: baselines.choose_on_validation; the
test windows of the evaluation protocol are never read here) -> EASE fitted with it -> the run
(model/ease.safetensors + ease.json, config.yaml, report.json / report.md / README.md, cost).

The search is the ALS recipe's `search_inside_grid` over the one l2 axis: it starts from
START_GRID and, while the choice sits on an edge, adds one step past it (the edge's own ratio:
500 -> 1250, 50 -> 25) and scores the new point only, up to `model.search_rounds` times. Each
point is one dense solve on the validation cut (time grows as n³ in the items with a positive,
memory as 12·n² bytes at the peak: baselines.EASE). The report says what was chosen, each round's
grid and every point's validation NDCG@10.
Leaves out: resuming (a fit is one solve), test-split evaluation (`verticals recsys evaluate`,
benchmarks/recsys_movielens.py) and serving (ease_index).
"""

from __future__ import annotations

from pathlib import Path

from core.foundation.errors import UserError
from core.runs.scaffold import RecipeRun
from solutions.recsys.als_recipe import search_inside_grid, validation_scores
from solutions.recsys.baselines import EASE
from solutions.recsys.ease_index import bytes_of_b, save_ease
from solutions.recsys.ease_report import EASE_REPORT
from solutions.recsys.protocol import recipe_training_split
from solutions.recsys.recipe_config import EASERecipe

START_GRID = {"l2": [50.0, 100.0, 200.0, 500.0]}


def train_ease(cfg: EASERecipe, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
               overwrite: bool = False, progress: bool = True) -> dict:
    """Choose EASE's l2 on the validation cut (or take the config's), fit on every interaction, and
    write the run to `run_dir`; returns the report."""
    if resume:
        raise UserError("recsys EASE runs do not resume (a fit is one solve); start again with --overwrite")
    run = RecipeRun.open(cfg, run_dir, resume=False, overwrite=overwrite, has_checkpoint=False)
    data, split = recipe_training_split(cfg.data, data_dir)
    m = cfg.model
    run.save_config()
    with run.ledger() as ledger:
        search = None
        if m.search:
            search = search_inside_grid(validation_scores(lambda **p: EASE(**p, max_items=m.max_items), split),
                                        START_GRID, m.search_rounds)
        l2 = search["chosen"]["l2"] if search else m.l2
        model = EASE(l2=l2, max_items=m.max_items).fit(split)
    if not run.is_main:
        return run.wait_for_main()
    save_ease(model, run.run_dir / "model")
    cost = ledger.cost
    cost.trainable_params = cost.total_params = int(model.weights.size)
    n = len(model.active)
    sections = {"data": data.summary(),
                "fit": {"params": {"l2": l2}, "items_scored": n, "matrix_bytes": bytes_of_b(n)},
                **({"search": search} if search else {})}
    return run.write_report(sections, cost=cost, steps=0, renderer=EASE_REPORT)
