"""The ALS recipe: `verticals train recsys/als data=...` (task: recsys-als), a run directory that
`verticals recsys index DATA --model RUN` serves through the one index (solutions.recsys.factors_index).

Reads top to bottom like the other recipes: config -> interactions -> every interaction as
training (as the served model learns from all of them) -> hyper-parameters chosen on the
validation cut (the training histories cut again in time: baselines.choose_on_validation; the
test windows of the evaluation protocol are never read here) -> ALS fitted with them -> the run
(model/factors.safetensors + factors.json, config.yaml, report.json / report.md / README.md, cost).

The search (`search_inside_grid`) starts from a small grid over factors, regularization and alpha
and, while the choice sits on an edge of an axis, adds one more step past that edge (the axis'
own ratio: 64 -> 128, 10 -> 100) and searches the new points only, up to `model.search_rounds`
times: ALS and BPR sat on their grids' edges in the MovieLens benchmark. The report says what was
chosen, each round's grid, every point's validation NDCG@10, and an axis still on its edge.
Leaves out: resuming (a fit is seconds), BPR and EASE recipes, and test-split evaluation
(`verticals recsys evaluate`, benchmarks/recsys_movielens.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from core.foundation.errors import UserError
from core.runs.scaffold import RecipeRun
from solutions.recsys.als_report import ALS_REPORT, METRIC
from solutions.recsys.baselines import choose_on_validation
from solutions.recsys.factorization import ALS
from solutions.recsys.factors_index import save_factors
from solutions.recsys.protocol import recipe_training_split
from solutions.recsys.recipe_config import ALSRecipe

START_GRID = {"factors": [32, 64, 128], "regularization": [0.1, 1.0, 10.0], "alpha": [1.0, 4.0, 10.0]}


def widen(axes: dict[str, list], chosen: dict) -> tuple[dict[str, list], list[str]]:
    """`axes` with one more step past each edge the `chosen` point sits on (an axis of one value
    stays); returns (the axes, the names of the axes that widened)."""
    out, widened = {}, []
    for name, values in axes.items():
        values = sorted(values)
        if len(values) > 1 and chosen[name] in (values[0], values[-1]):
            low = chosen[name] == values[0]
            ratio = values[1] / values[0] if low else values[-1] / values[-2]
            step = values[0] / ratio if low else values[-1] * ratio
            step = max(1, round(step)) if isinstance(values[0], int) else float(f"{step:.6g}")
            if step not in values:
                values = [step, *values] if low else [*values, step]
                widened.append(name)
        out[name] = values
    return out, widened


def search_inside_grid(score, start: dict[str, list], rounds: int) -> dict:
    """Search `score(list[params]) -> [value]` over the grid of `start`, widening past the edges the
    best point sits on, at most `rounds` times; each point is scored once. Ties go to the point
    listed first (smaller values first)."""
    axes, scores, history = {k: sorted(v) for k, v in start.items()}, {}, []
    for round_ in range(rounds + 1):
        grid = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
        new = [p for p in grid if tuple(p.values()) not in scores]
        scores.update(zip((tuple(p.values()) for p in new), score(new)) if new else ())
        best = max(grid, key=lambda p: (scores[tuple(p.values())], -grid.index(p)))
        history.append({"round": round_, "grid": {k: list(v) for k, v in axes.items()}, "best": best,
                        METRIC: scores[tuple(best.values())]})
        wider, widened = widen(axes, best)
        if not widened or round_ == rounds:
            break
        axes = wider
    on_edge = [k for k, v in axes.items() if len(v) > 1 and best[k] in (min(v), max(v))]  # of the last grid searched
    points = [{"params": dict(zip(start, key)), METRIC: value} for key, value in scores.items()]
    return {"chosen": best, METRIC: scores[tuple(best.values())], "rounds": history, "on_edge": on_edge,
            "points": points}


def validation_scores(build, split):
    """`score(points)` for `search_inside_grid`: each point's validation NDCG@10 of `build(**point)`
    (baselines.choose_on_validation: fitted and scored on the validation cut of `split`)."""
    return lambda points: [r[METRIC] for r in choose_on_validation(build, points, split)[1]]


def train_als(cfg: ALSRecipe, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool = True) -> dict:
    """Choose ALS's settings on the validation cut (or take the config's), fit on every interaction,
    and write the run to `run_dir`; returns the report."""
    if resume:
        raise UserError("recsys ALS runs do not resume (a fit is seconds); start again with --overwrite")
    run = RecipeRun.open(cfg, run_dir, resume=False, overwrite=overwrite, has_checkpoint=False)
    data, split = recipe_training_split(cfg.data, data_dir)
    m, seed = cfg.model, cfg.train.seed
    run.save_config()
    with run.ledger() as ledger:
        search = None
        if m.search:
            search = search_inside_grid(validation_scores(lambda **p: ALS(**p, iterations=m.iterations, seed=seed),
                                                          split), START_GRID, m.search_rounds)
        params = search["chosen"] if search else {"factors": m.factors, "regularization": m.regularization,
                                                  "alpha": m.alpha}
        model = ALS(**params, iterations=m.iterations, seed=seed).fit(split)
    if not run.is_main:
        return run.wait_for_main()
    save_factors(model, run.run_dir / "model")
    cost = ledger.cost
    cost.trainable_params = cost.total_params = int(model.item_factors.size)
    sections = {"data": data.summary(), "fit": {"params": model.params, "items_with_factors": int(len(model.active))},
                **({"search": search} if search else {})}
    return run.write_report(sections, cost=cost, steps=0, renderer=ALS_REPORT)
