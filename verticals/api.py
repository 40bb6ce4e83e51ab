"""The Python API: train, load, plan, retrain, and the registry; the runs it returns live beside it.

    import verticals
    run = verticals.train("support/intent-lora", data="tickets.csv", text_column="body", out="runs/x")
    run.predict(["my card was declined"])          # a Run (verticals.run): predict, evaluate, serve, export
    run = verticals.load("runs/x")                 # any run directory, on any machine with the package
    monitor = verticals.monitor("runs/sentiment", db="monitor.db", watchlist="watch.yaml")
    monitor.run("news.jsonl"); monitor.alerts()    # a Monitor (verticals.monitor)
    rec = verticals.index("demo_catalog", out="index/")    # the recommender (verticals.recommender)
    rec.recommend(["i1", "i2"], k=10)

Each function is a thin layer over what the CLI runs (the registry's TASKS, core.plan.planner,
core.mlops.retrain, core.mlops.registry): the same run directories, the same validation and errors
(core.foundation.errors.UserError). Library code stays quiet: no progress bars and no Hugging Face
warnings unless `progress=True` / `verbose=True` is asked for; the console keeps its own (verticals.cli).
Leaves out: the command line (verticals.cli), what each call runs, and the objects it returns
(verticals.run, verticals.recommender, verticals.monitor).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from core.foundation.errors import UserError
from core.foundation.quiet import quieted
from core.mlops import registries
from core.models.predictor import MODEL_FILE, model_dir
from core.runs.rundir import REPORT_FILE, default_out
from verticals.feedback_sources import read_feedback
from verticals.monitor import Monitor
from verticals.recipe_files import resolve_recipe
from verticals.recommender import EncoderRun, load_index
from verticals.registry import RECIPES, TASKS
from verticals.run import Run
from verticals.tasks import run_task

if TYPE_CHECKING:
    from core.mlops.registry import ModelRegistry


def _settings(overrides: Mapping | None, settings: dict) -> dict:
    merged = dict(overrides or {}) | settings
    return {k: str(v) if isinstance(v, Path) else v for k, v in merged.items()}


def train(recipe: str | os.PathLike, overrides: Mapping | None = None, *, out: str | os.PathLike | None = None,
          data_dir: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = False,
          verbose: bool = False, **settings) -> Run | EncoderRun:
    """Train `recipe` (a name from `verticals.RECIPES`, your recipe YAML, or a run's config.yaml)
    into `out` (default runs/<recipe>-<time>) and return the finished run.

    Settings are the recipe keys, as keyword arguments where the name is unique across sections
    (`data="tickets.csv", text_column="body", epochs=2, lr=1e-4, backbone="tiny"`) or in
    `overrides` by dotted path (`{"train.lr": 1e-4}`). An existing run in `out` is refused unless
    `overwrite=True`; `resume=True` continues an interrupted one. `progress=True` shows the
    training progress bar; `verbose=True` lets the libraries' warnings through."""
    with quieted(not verbose):
        cfg, runner = resolve_recipe(recipe, _settings(overrides, settings), RECIPES, TASKS)
        if resume and out is None:
            raise UserError("resume=True needs out=RUN_DIR: the directory of the interrupted run to continue")
        out = Path(out) if out is not None else default_out(cfg.name)
        runner(cfg, out, data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress)
    return load(out)


def load(path: str | os.PathLike, *, runtime: str = "torch", threads: int | None = None):
    """What a directory holds: a finished run -> what its task opens it as (verticals.registry.TASKS:
    a classification run -> Run, a recommender item-encoder run -> EncoderRun); a classifier's
    model/ folder -> Run; an index from `verticals.index` / `verticals recsys index` -> the live
    Recommender. `runtime` (torch, onnx, onnx-int8) and `threads` apply to classifiers."""
    path = Path(path).expanduser()
    if (path / "catalog.json").is_file():
        return load_index(path)
    if (path / REPORT_FILE).is_file():
        return run_task(path, TASKS).open_run(path, runtime=runtime, threads=threads)
    if (path / "model" / MODEL_FILE).is_file() or (path / MODEL_FILE).is_file():
        return Run(path, runtime=runtime, threads=threads)
    model_dir(path)  # raises the UserError that says what `path` is missing
    raise UserError(f"{path} is not a verticals run or index")


def monitor(model, db: str | os.PathLike, **options) -> Monitor:
    """A finance risk monitor: `model` is a sentiment Run, its path, a Predictor, or "zeroshot";
    `db` the SQLite database (created; re-runs resume) or a `postgresql://` URL shared by several
    workers. Options: watchlist (YAML path), rules (YAML path), window ("1h"), sinks
    (("jsonl:alerts.jsonl", "webhook:URL")), runtime, batch_size, inbox (the folder `ingest` writes to;
    default `<db>.inbox/` beside a SQLite file, required with PostgreSQL)."""
    return Monitor(model.model if isinstance(model, Run) else model, db, **options)


def plan(data: str | os.PathLike, target: float = 0.9, *, budget: str = "", latency: str = "",
         out: str | os.PathLike | None = None, run: bool = False, data_dir: str | None = None,
         progress: bool = False, **settings) -> dict:
    """Predict each recipe's accuracy, training time and cost, and inference latency and cost, on
    `data` (your CSV/JSONL, a folder or a catalog name) on this machine, and recommend the cheapest
    that meets `target` within `budget` (e.g. "30m") and `latency` (single-query p50, e.g. "5ms").
    Other settings are core.plan.planner.PlanConfig's (backbone="tiny", epochs=2, systems="tfidf,probe").
    Returns the plan (`recommendation`, `predictions`, `learning_curve`, `more_labels`); with
    `out`, writes plan.json and plan.png there; `run=True` also trains the recommended recipe
    into out/run-<recipe> and adds its path as `run` and predicted vs actual as `outcome`."""
    from core.plan.planner import make_plan, plan_config, run_recommended  # lazy: loads torch
    from core.plan.plot import plot_plan  # lazy: loads matplotlib

    with quieted(True):
        cfg = plan_config(_settings(settings, {"data": data, "target": target, "budget": budget,
                                               "latency": latency}))
        result = make_plan(cfg, data_dir=data_dir, progress=progress)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "plan.json").write_text(json.dumps(result, indent=2))
            plot_plan(result, Path(out) / "plan.png")
        if run:
            run_recommended(result, cfg, Path(out or "."), data_dir=data_dir, progress=progress)
    return result


def retrain(run: str | os.PathLike | Run, feedback, *, out: str | os.PathLike | None = None,
            registry: str | os.PathLike | None = None, promote: str = "auto", by: str | None = None,
            data_dir: str | None = None, overwrite: bool = False, progress: bool = False, verbose: bool = False,
            **settings) -> dict:
    """A challenger from a deployed run (`run`: a Run, its path, or a registry directory, whose
    champion is taken) and `feedback` (a feedback database path, as `verticals retrain --feedback`
    reads, or a list of core.mlops.feedback.FeedbackExample), written to `out` (default
    runs/retrain-<time>). With `registry` it is registered (and promoted iff the gate says so, unless
    promote="never"). `settings`: core.mlops.retrain_plan.RetrainSettings fields (holdout_fraction, replay_ratio,
    min_examples_new_label, margin, steps, seed, validation_fraction). Returns the challenger's
    report: report["retrain"] holds champion / challenger scores, the gate and the cost; with a
    registry, report["registry"] the version and its status."""
    from core.mlops.retrain import retrain as retrain_run  # lazy: loads torch
    from core.mlops.retrain import retrain_and_register  # lazy: as above

    path = Path(run.path if isinstance(run, Run) else run).expanduser()
    if registries.is_registry(path):
        reg = open_registry(path)
        if reg.champion() is None:
            raise UserError(f"the registry {path} has no champion to retrain")
        registry, path = registry or path, reg.champion_path()
    examples = read_feedback(feedback) if isinstance(feedback, (str, os.PathLike)) else list(feedback)
    from core.mlops.retrain_plan import RetrainSettings  # lazy: start-up of `import verticals`

    config = RetrainSettings.from_overrides(settings)
    out = Path(out) if out is not None else default_out("retrain")
    with quieted(not verbose):
        if registry is not None:
            return retrain_and_register(path, examples, registry=registry, out=out, promote=promote, by=by,
                                        data_dir=data_dir, settings=config, progress=progress, overwrite=overwrite)
        return retrain_run(path, examples, out=out, data_dir=data_dir, settings=config, progress=progress,
                           overwrite=overwrite)


def open_registry(path: str | os.PathLike, state: str | None = None) -> ModelRegistry:
    """The model registry in `path` (core.mlops.registry.ModelRegistry; created if missing): versions,
    champion_path(), promote(version, by=, reason=), rollback(by=). `state`: a postgresql:// URL
    keeping its state in that database, for hosts sharing `path` (core.mlops.registry_postgres;
    default: env VERTICALS_REGISTRY_STATE)."""
    return registries.open_registry(path, state)
