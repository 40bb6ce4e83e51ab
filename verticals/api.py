"""The Python API: train, load, predict, evaluate, serve; the monitor and the recommender.

    import verticals
    run = verticals.train("support/intent-lora", data="tickets.csv", text_column="body", out="runs/x")
    run.predict(["my card was declined"])          # [{"label", "confidence", "top_k"}]
    run.evaluate()                                 # its own test split, rebuilt as training split it
    run = verticals.load("runs/x")                 # any run directory, on any machine with the package
    run.serve(port=8000)                           # the intent router over HTTP (blocks)
    monitor = verticals.monitor("runs/sentiment", db="monitor.db", watchlist="watch.yaml")
    monitor.run("news.jsonl"); monitor.alerts()
    rec = verticals.index("demo_catalog", out="index/")    # or model="runs/items" (an item-encoder run)
    rec.recommend(["i1", "i2"], k=10)

Each function is a thin layer over what the CLI runs (core.classify.recipes through the registry's TASKS,
core.models.predictor.load_run, solutions.support.router, solutions.finance.monitor,
solutions.recsys): the same run directories, the same validation and errors (core.foundation.errors.UserError).
Library code stays quiet: no progress bars and no Hugging Face warnings unless `progress=True` /
`verbose=True` is asked for; the console keeps its own (verticals.cli).
Leaves out: the command line (verticals.cli) and what each call runs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path

import numpy as np

from core.foundation.errors import UserError
from core.foundation.quiet import quieted
from core.foundation.text import check_text
from verticals.registry import RECIPES, TASKS

RECSYS_TASK = "recsys-item-encoder"


def _texts(texts: str | Iterable[str]) -> tuple[list[str], bool]:
    """(checked texts, whether one bare string was given)."""
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise UserError(f"text {i + 1} is a {type(text).__name__}, not a string")
    return [check_text(t, f"text {i + 1}") for i, t in enumerate(items)], single


def _settings(overrides: Mapping | None, settings: dict) -> dict:
    merged = dict(overrides or {}) | settings
    return {k: str(v) if isinstance(v, Path) else v for k, v in merged.items()}


def train(recipe: str | os.PathLike, overrides: Mapping | None = None, *, out: str | os.PathLike | None = None,
          data_dir: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = False,
          verbose: bool = False, **settings) -> "Run | EncoderRun":
    """Train `recipe` (a name from `verticals.RECIPES`, your recipe YAML, or a run's config.yaml)
    into `out` (default runs/<recipe>-<time>) and return the finished run.

    Settings are the recipe keys, as keyword arguments where the name is unique across sections
    (`data="tickets.csv", text_column="body", epochs=2, lr=1e-4, backbone="tiny"`) or in
    `overrides` by dotted path (`{"train.lr": 1e-4}`). An existing run in `out` is refused unless
    `overwrite=True`; `resume=True` continues an interrupted one. `progress=True` shows the
    training progress bar; `verbose=True` lets the libraries' warnings through."""
    from core.runs.rundir import default_out
    from verticals.recipe_files import resolve_recipe

    with quieted(not verbose):
        cfg, runner = resolve_recipe(recipe, _settings(overrides, settings), RECIPES, TASKS)
        if resume and out is None:
            raise UserError("resume=True needs out=RUN_DIR: the directory of the interrupted run to continue")
        out = Path(out) if out is not None else default_out(cfg.name)
        runner(cfg, out, data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress)
    return load(out)


def load(path: str | os.PathLike, *, runtime: str = "torch", threads: int | None = None):
    """What a directory holds: a classification run (or its model/ folder) -> Run; a recommender
    item-encoder run -> EncoderRun; an index from `verticals.index` / `verticals recsys index` ->
    the live Recommender. `runtime` (torch, onnx, onnx-int8) and `threads` apply to classifiers."""
    from core.models.predictor import MODEL_FILE

    path = Path(path).expanduser()
    if (path / "catalog.json").is_file():
        from solutions.recsys.live import Recommender

        with quieted():
            return Recommender.load(path)
    report = path / "report.json"
    if report.is_file() and json.loads(report.read_text()).get("config", {}).get("task") == RECSYS_TASK:
        return EncoderRun(path)
    if (path / "model" / MODEL_FILE).is_file() or (path / MODEL_FILE).is_file():
        return Run(path, runtime=runtime, threads=threads)
    from core.models.predictor import model_dir

    model_dir(path)  # raises the UserError that says what `path` is missing
    raise UserError(f"{path} is not a verticals run or index")


class Run:
    """A trained classifier's run directory: its report, its model (a core.models.predictor.Predictor,
    loaded on first use in `runtime`) and what to do with it."""

    def __init__(self, path: str | os.PathLike, *, runtime: str = "torch", threads: int | None = None):
        from core.models.predictor import RUNTIMES, model_dir

        if runtime not in RUNTIMES:
            raise UserError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
        self.path, self.runtime, self.threads = Path(path), runtime, threads
        self.model_dir = model_dir(self.path)
        self._model = None

    def __repr__(self) -> str:
        test = self.metrics.get("test", {})
        score = f", test accuracy {test['accuracy']:.4f}" if "accuracy" in test else ""
        return f"Run({str(self.path)!r}, {len(self.labels)} labels{score}, runtime={self.runtime!r})"

    # ------------------------------------------------------------ what the run says
    @cached_property
    def report(self) -> dict:
        """report.json (config, data, metrics, confidence, cost, environment); {} for a bare model/ folder."""
        path = self.model_dir.parent / "report.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def config(self) -> dict:
        return self.report.get("config", {})

    @property
    def metrics(self) -> dict:
        """{split: {n, accuracy, macro_f1, ...}} as measured when the run finished."""
        return self.report.get("metrics", {})

    @property
    def cost(self) -> dict:
        return self.report.get("cost", {})

    @cached_property
    def labels(self) -> list[str]:
        return list(json.loads((self.model_dir / "classifier.json").read_text())["labels"])

    @property
    def model(self):
        """The Predictor (PyTorch TextClassifier or ONNX Runtime twin), loaded once."""
        if self._model is None:
            from core.models.predictor import load_run

            with quieted():
                self._model = load_run(self.model_dir, self.runtime, threads=self.threads)
        return self._model

    # ------------------------------------------------------------ using the model
    def predict(self, texts: str | Iterable[str], top_k: int = 3):
        """{"text", "label", "confidence", "top_k"} per text (a list, or one dict for one string);
        confidences are calibrated probabilities, as `verticals predict` prints them."""
        from core.classify.scoring import predict_texts

        items, single = _texts(texts)
        rows = predict_texts(self.model, items, top_k=top_k) if items else []
        return rows[0] if single else rows

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """[n, len(labels)] calibrated probabilities, columns in `labels` order."""
        items, _ = _texts(texts)
        return self.model.predict_proba(items) if items else np.zeros((0, len(self.labels)), dtype=np.float32)

    def evaluate(self, data: str | os.PathLike | None = None, *, split: str | None = None, data_dir: str | None = None,
                 text_column: str | None = None, label_column: str | None = None, encoding: str | None = None) -> dict:
        """Metrics on the run's own test split (default), another split (`split="validation"`), or
        every row of another labelled file / dataset (`data=`), as `verticals eval` computes them."""
        from core.classify.scoring import evaluate_run

        columns = {k: v for k, v in (("text_column", text_column), ("label_column", label_column),
                                     ("encoding", encoding)) if v is not None}
        with quieted():
            return evaluate_run(self.model_dir.parent, None if data is None else str(data), data_dir=data_dir,
                                split=split, columns=columns, model=self.model)

    def router(self, routes: str | os.PathLike | None = None, **settings):
        """The intent router over this model (solutions.support.router): calibrated confidence,
        out-of-scope handover, a routing table YAML (`routes`); `settings`: min_confidence,
        min_margin, use_out_of_scope, top_k."""
        from solutions.support.router import IntentRouter, RouterSettings, RoutingTable

        table = RoutingTable.from_yaml(Path(routes), self.labels) if routes else None
        return IntentRouter(self.model, table, RouterSettings(**settings))

    def route(self, texts: str | Iterable[str], routes: str | os.PathLike | None = None, **settings):
        items, single = _texts(texts)
        rows = self.router(routes, **settings).route_batch(items) if items else []
        return rows[0] if single else rows

    def app(self, routes: str | os.PathLike | None = None, *, token: str | None = None,
            public: Iterable[str] = (), log: str | os.PathLike | None = None, log_text: bool = False, **settings):
        """The FastAPI app `serve` runs (POST /v1/route, /v1/feedback, GET /v1/drift, /healthz,
        /readyz, /metrics, /docs), to mount in your own server or test with a client. `token`:
        bearer token for every route but health/readiness and `public` ones (docs, metrics).
        `log`: a prediction log (SQLite, app.state.prediction_log) for feedback and drift reports
        (default: none, and no /v1/feedback); `log_text` keeps the texts, not only their hash."""
        from core.serving.app import Access
        from solutions.support.deployment import ServedModel, load_baseline, model_version
        from solutions.support.service import create_app

        router = self.router(routes, **settings)
        served = ServedModel(router, model_version(self.model_dir), load_baseline(self.model_dir, router.settings),
                             str(self.path))
        prediction_log = None
        if log is not None:
            from core.mlops.feedback import PredictionLog

            prediction_log = PredictionLog(Path(log), store_text=log_text)
        app = create_app(served, access=Access.from_settings(token, ",".join(public)), prediction_log=prediction_log)
        app.state.prediction_log = prediction_log
        return app

    def serve(self, port: int = 8000, host: str = "127.0.0.1", routes: str | os.PathLike | None = None, *,
              token: str | None = None, public: Iterable[str] = (), log: str | os.PathLike | None = None,
              log_text: bool = False, **settings) -> None:
        """Serve the router over HTTP until interrupted (as `verticals serve RUN`; `log`: see `app`)."""
        from core.serving.server import serve

        app = self.app(routes, token=token, public=public, log=log, log_text=log_text, **settings)
        try:
            serve(app, host, port)
        finally:
            if app.state.prediction_log is not None:
                app.state.prediction_log.close()

    def export_onnx(self, int8: bool = False) -> Path:
        """Write model/model.onnx (and model.int8.onnx) for `runtime="onnx"` / `"onnx-int8"`."""
        from core.export.onnx import export_run_onnx

        with quieted():
            return export_run_onnx(self.model_dir, int8=int8)[-1]

    def export_hf(self, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """A directory `transformers.pipeline("text-classification", model=out, trust_remote_code=True)`
        loads with these labels and predictions, with a model card (core.export.hub)."""
        from core.export.hub import export_hf

        with quieted():
            return export_hf(self.model_dir.parent, Path(out), overwrite=overwrite)

    def monitor(self, db: str | os.PathLike, **options) -> "Monitor":
        """A finance monitor scoring with this model (see `verticals.monitor`)."""
        return Monitor(self, db, **options)


class EncoderRun:
    """A recommender item-encoder run (`recsys/item-encoder`): its report and its encoder/."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.encoder_path = self.path / "encoder"
        if not self.encoder_path.is_dir():
            raise UserError(f"{self.path} has no encoder/ (an unfinished item-encoder run?)")

    def __repr__(self) -> str:
        return f"EncoderRun({str(self.path)!r})"

    @cached_property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())

    @property
    def metrics(self) -> dict:
        return self.report.get("metrics", {})

    def index(self, data: str, out: str | os.PathLike, **options):
        """Embed `data`'s catalog with this encoder into an index at `out` (see `verticals.index`)."""
        return index(data, out, model=self, **options)


def index(data: str, out: str | os.PathLike, *, model: "str | os.PathLike | EncoderRun" = "minilm",
          items: str | None = None, text_columns: Iterable[str] = ("title",), threshold: float | None = None,
          factory: str = "Flat", metadata_columns: Iterable[str] = (), half_life: float = 5.0,
          data_dir: str | None = None):
    """Build a recommender index: embed every item of `data` (a catalog name such as
    `movielens_latest_small` / `demo_catalog`, or your interactions CSV with `items=` ITEMS.csv)
    with `model` (an item-encoder run, or a backbone name) into `out`, and return the live
    Recommender (recommend, recommend_for_user, similar_to_item, similar_to_text, add_item,
    update_item, remove_item; every write journaled in `out`)."""
    from solutions.recsys.catalog import build_index
    from solutions.recsys.data import load_interactions
    from solutions.recsys.live import Recommender

    encoder = model.encoder_path if isinstance(model, EncoderRun) else Path(model)
    encoder = encoder / "encoder" if (encoder / "encoder").is_dir() else encoder
    encoder = str(encoder.resolve()) if encoder.is_dir() else str(model)  # a directory, or a backbone name
    with quieted():
        interactions = load_interactions(data, root=data_dir, items=items, item_text_columns=tuple(text_columns))
        build_index(interactions, encoder, Path(out), data_spec=data, factory=factory,
                    metadata_columns=tuple(metadata_columns), half_life=half_life, threshold=threshold,
                    data_dir=data_dir, items=items)
        return Recommender.load(out)


def monitor(model, db: str | os.PathLike, **options) -> "Monitor":
    """A finance risk monitor: `model` is a sentiment Run, its path, a Predictor, or "zeroshot";
    `db` the SQLite database (created; re-runs resume) or a `postgresql://` URL shared by several
    workers. Options: watchlist (YAML path), rules (YAML path), window ("1h"), sinks
    (("jsonl:alerts.jsonl", "webhook:URL")), runtime, batch_size, inbox (the folder `ingest` writes to;
    default `<db>.inbox/` beside a SQLite file, required with PostgreSQL)."""
    return Monitor(model, db, **options)


class Monitor:
    """Scores per company over time and risk alerts, in a crash-safe SQLite store
    (solutions.finance.monitor). `run(*inputs)` reads JSONL files or folders (each resumes where
    it stopped); `ingest(documents)` first appends the documents durably to a JSONL file in
    `<db>.inbox/`, so what was handed over is never lost, then runs on it."""

    def __init__(self, model, db: str | os.PathLike, *, watchlist: str | os.PathLike | None = None,
                 rules: str | os.PathLike | None = None, window: str | None = None, sinks: Iterable[str] = (),
                 runtime: str = "torch", batch_size: int = 64, inbox: str | os.PathLike | None = None):
        from solutions.finance.monitor.loop import MonitorConfig

        shared = str(db).startswith(("postgresql://", "postgres://"))
        self.db = str(db) if shared else Path(db)
        self.inbox = Path(inbox) if inbox else None if shared else self.db.with_name(self.db.name + ".inbox")
        spec = model if isinstance(model, (str, os.PathLike)) else "python object"
        self._model = model.model if isinstance(model, Run) else None if isinstance(model, (str, os.PathLike)) else model
        self.config = MonitorConfig(inputs=(), db=self.db, model=str(spec), runtime=runtime,
                                    watchlist=Path(watchlist) if watchlist else None,
                                    rules=Path(rules) if rules else None, window=window, sinks=tuple(sinks),
                                    batch_size=batch_size, drain_seconds=0.0)

    def __repr__(self) -> str:
        return f"Monitor(db={str(self.db)!r})"

    def _scorer(self):
        if self._model is None:
            from solutions.finance.monitor.loop import load_scorer

            with quieted():
                self._model = load_scorer(self.config.model, self.config.runtime)
        return self._model

    def run(self, *inputs: str | os.PathLike):
        """Ingest JSONL files / folders of *.jsonl to their end, aggregate, alert; returns the
        run's stats (lines, new documents, quarantined, alerts, totals)."""
        from dataclasses import replace

        from solutions.finance.monitor.loop import run_monitor

        if not inputs:
            raise UserError("give one or more JSONL files or folders to read")
        with quieted():
            return run_monitor(replace(self.config, inputs=tuple(str(i) for i in inputs)), model=self._scorer())

    def ingest(self, documents: Iterable[dict | str]):
        """Append `documents` ({"id", "text", "ts", "tickers"?, ...} or JSON lines) to a new file in
        `<db>.inbox/` (written and fsynced before anything is scored), then `run` it."""
        if self.inbox is None:
            raise UserError("with a PostgreSQL database, give Monitor(..., inbox=FOLDER): ingest writes the documents "
                            "there durably before scoring them")
        inbox = self.inbox
        inbox.mkdir(parents=True, exist_ok=True)
        lines = [doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False) for doc in documents]
        if any("\n" in line for line in lines):
            raise UserError("a document given as a string must be one JSON line (no newlines)")
        from core.foundation.durable import atomic_write

        path = inbox / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in lines), encoding="utf-8"))
        return self.run(path)

    def _store(self):
        from solutions.finance.monitor.loop import open_store
        from solutions.finance.monitor.rules import load_rules

        rules = load_rules(self.config.rules, self.config.window)
        return open_store(self.db, rules.window, rules.lateness)

    def alerts(self) -> list[dict]:
        """Every alert raised so far, oldest window first."""
        store = self._store()
        try:
            return store.alerts()
        finally:
            store.close()

    def timeline(self, entity: str) -> list[dict]:
        """The entity's windows: start, documents, mean score, negative share."""
        from dataclasses import asdict

        store = self._store()
        try:
            return [asdict(w) for w in store.aggregates(entity)]
        finally:
            store.close()

    def counts(self) -> dict:
        store = self._store()
        try:
            return store.counts() | {"quarantine_reasons": store.quarantine_reasons()}
        finally:
            store.close()

    def report(self, out: str | os.PathLike, max_entities: int = 40) -> Path:
        """The self-contained HTML report (timelines and alerts per company)."""
        from solutions.finance.monitor.report import render_report

        if not isinstance(self.db, Path):
            raise UserError("the HTML report reads a SQLite monitor database; a PostgreSQL one is not supported yet")
        return render_report(self.db, Path(out), max_entities=max_entities)


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
    from core.plan.planner import make_plan, plan_config, plot_plan, run_recommended

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


def retrain(run: "str | os.PathLike | Run", feedback, *, out: str | os.PathLike | None = None,
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
    from core.runs.rundir import default_out
    from core.mlops.retrain_plan import RetrainSettings
    from core.mlops.retrain import retrain as retrain_run, retrain_and_register
    from verticals.feedback_sources import read_feedback

    path = Path(run.path if isinstance(run, Run) else run).expanduser()
    if (path / "registry.json").is_file():
        reg = open_registry(path)
        if reg.champion() is None:
            raise UserError(f"the registry {path} has no champion to retrain")
        registry, path = registry or path, reg.champion_path()
    examples = read_feedback(feedback) if isinstance(feedback, (str, os.PathLike)) else list(feedback)
    config = RetrainSettings.from_overrides(settings)
    out = Path(out) if out is not None else default_out("retrain")
    with quieted(not verbose):
        if registry is not None:
            return retrain_and_register(path, examples, registry=registry, out=out, promote=promote, by=by,
                                        data_dir=data_dir, settings=config, progress=progress, overwrite=overwrite)
        return retrain_run(path, examples, out=out, data_dir=data_dir, settings=config, progress=progress,
                           overwrite=overwrite)


def open_registry(path: str | os.PathLike):
    """The model registry in `path` (core.mlops.registry.ModelRegistry; created if missing): versions,
    champion_path(), promote(version, by=, reason=), rollback(by=)."""
    from core.mlops.registry import ModelRegistry

    return ModelRegistry(path)

