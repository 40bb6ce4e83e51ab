"""Experiment tracking: a run's config, metrics, cost and report also go to MLflow or TensorBoard.

`tracking=mlflow` or `tracking=tensorboard` (TrackingConfig, both optional extras) adds a tracker
beside the run directory, which stays the record of the run: the tracker gets the flattened config
as parameters at the start, every row of the engine's metrics log as it is written (training loss
and learning rate every `log_every` steps, `validation_*` after each validation pass, so a UI shows
the curves while the run trains), then the final per-split metrics (`test/accuracy`), `fit/*`,
`confidence/*` and the cost ledger (`cost/wall_seconds`, ...) at the step the run ended on, and
the report (report.json/report.md/config.yaml and the plots) where the backend stores files.

- `MlflowTracker`: MLflow's client API (`MlflowClient`, no global active run). Store: `tracking.uri`,
  else MLFLOW_TRACKING_URI, else a SQLite store beside the runs (`<parent of --out>/mlflow.db`,
  artifacts in `mlartifacts/` next to it). SQLite is MLflow 3's default local store; its
  filesystem store (`./mlruns`) is deprecated and, from 3.13, refused unless
  MLFLOW_ALLOW_FILE_STORE=true, so a plain path given as `tracking.uri` means "a SQLite store
  there" (`DIR/mlflow.db`, or the `.db` file named); a `file:` URI still reaches MLflow's own store.
  Experiment: `tracking.experiment`, else the recipe's name. Run name: the run directory's name,
  tagged with its path, so `--resume` continues the same MLflow run.
- `TensorBoardTracker`: torch's SummaryWriter; event files in `<run dir>/tensorboard` (or
  `<tracking.uri>/<run name>`): scalars, the config and report.md as text, the plots as images and
  the config as HParams (written at the end, with the final metrics).

Tracking never costs a run: `RunTracking` warns once on stderr when a backend fails and drops it
for the rest of the run (a `UserError` at start, e.g. a missing extra, still stops the run before
it trains); a tracking server that stops answering holds the run once, for MLflow's own HTTP
retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, _BACKOFF_FACTOR), and an unfinished run (an exception,
Ctrl-C) is ended FAILED when the process exits. Only the main process of a distributed run
tracks (core.foundation.distributed). Hand-written
rather than MLflow's or Lightning's autologging because the engine is ours (core.engine.loop), and
because its metrics log, not the library's callbacks, is what both backends read.
Leaves out: model files as artifacts (a run's model/ is the registry's business), system metrics,
the contrastive phase of few-shot runs (core.classify.fewshot logs no metrics rows), and credentials
(MLflow reads its own MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD; a URI is saved in config.yaml).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import numpy as np

from core.foundation.distributed import is_main
from core.foundation.errors import UserError
from core.foundation.settings import setting, to_dict
from core.runs.rundir import flat_config

Scalar = str | int | float | bool
# what each backend imports (the `verticals[...]` extra that installs it is named like the backend)
EXTRA_MODULES = {"mlflow": ("mlflow",), "tensorboard": ("tensorboard",)}
SQL_MODULES = ("sqlalchemy", "alembic")  # MLflow's database stores; mlflow-skinny does not pull them in
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
REPORT_SECTIONS = ("metrics", "fit", "confidence", "cost")  # numeric leaves become final metrics
REPORT_FILES = ("config.yaml", "report.json", "report.md")


def install_hint(backend: str) -> str:
    return f'pip install "verticals[{backend}]"'


def missing_extra(backend: str) -> str:
    """Why `backend` cannot run here ("" when it can): the config rule of `tracking.backend`."""
    missing = [m for m in EXTRA_MODULES.get(backend, ()) if importlib.util.find_spec(m) is None]
    if missing:
        return f" needs {', '.join(missing)}, which is not installed: {install_hint(backend)}"
    return ""


def _require(backend: str, modules: Iterable[str], why: str = "") -> None:
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"tracking={backend}{why} needs {module}, which is not installed: "
                            f"{install_hint(backend)} (or set tracking=none)") from None


def flat_params(config: dict) -> dict[str, Scalar]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}: a run's parameters, as its dotted keys (None -> "")."""
    return {key: "" if value is None else value for key, value in flat_config(config).items()}


def final_metrics(report: dict) -> dict[str, float]:
    """The numbers of a report's metrics, fit, confidence and cost sections, as flat metric names:
    `test/accuracy` (per split), `fit/best_step`, `confidence/out_of_scope_oos/auroc`, `cost/wall_seconds`."""
    out = {}

    def walk(value, name: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{name}/{key}" if name else str(key))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)

    for section in REPORT_SECTIONS:
        walk(report.get(section) or {}, "" if section == "metrics" else section)
    return out


def run_files(run_dir: Path) -> list[Path]:
    """What a finished run shows a tracker: its config, report and plots."""
    run_dir = Path(run_dir)
    return [p for p in (run_dir / n for n in REPORT_FILES) if p.is_file()] + sorted(run_dir.glob("*.png"))


class Tracker(Protocol):
    """A tracking backend. Statuses are MLflow's: FINISHED, FAILED, KILLED."""

    def start(self, run_name: str, params: dict[str, Scalar], tags: dict[str, str], *, resume: bool) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifacts(self, paths: list[Path]) -> None: ...  # files, or directories of them
    def end(self, status: str = "FINISHED") -> None: ...
    def describe(self) -> dict: ...  # where the run went, for the report's `tracking` section


class NoTracker:
    def start(self, run_name, params, tags, *, resume) -> None:
        pass

    def log_metrics(self, metrics, step) -> None:
        pass

    def log_artifacts(self, paths) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass

    def describe(self) -> dict:
        return {}


# ---------------------------------------------------------------- MLflow

def mlflow_uri(setting: str, run_dir: Path) -> str:
    """`tracking.uri` (a plain path: a SQLite store there), else MLFLOW_TRACKING_URI, else a
    SQLite store beside the runs."""
    if setting and not urlparse(setting).scheme:
        path = Path(setting).expanduser().resolve()
        return f"sqlite:///{path if path.suffix in ('.db', '.sqlite') else path / 'mlflow.db'}"
    return setting or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    return Path(unquote(uri[len("sqlite:///"):])) if uri.startswith("sqlite:///") else None


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, run_dir: Path):
        _require("mlflow", EXTRA_MODULES["mlflow"])
        if urlparse(uri).scheme.split("+")[0] in SQL_SCHEMES:
            _require("mlflow", SQL_MODULES, f" with the database store {uri}")
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH  # lazy: an optional extra ([mlflow])

        self.uri, self.experiment, self.run_dir = uri, experiment, Path(run_dir).resolve()
        self.max_param = MAX_PARAM_VAL_LENGTH
        self.client, self.run_id = None, ""

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException  # lazy: an optional extra ([mlflow])

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment '{self.experiment}' is deleted in {self.uri}: restore it "
                            f"(`mlflow experiments restore`) or choose another tracking.experiment=")
        if found is not None:
            return found.experiment_id
        db = sqlite_file(self.uri)  # SQLite's default artifact root is ./mlruns of the working directory
        location = (db.resolve().parent / "mlartifacts").as_uri() if db else None
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _unfinished_run(self, experiment_id: str):
        runs = self.client.search_runs([experiment_id], f"tags.`verticals.run_dir` = '{self.run_dir}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs and runs[0].info.status != "FINISHED" else None

    def start(self, run_name, params, tags, *, resume) -> None:
        from mlflow.entities import Param  # lazy: an optional extra ([mlflow])
        from mlflow.tracking import MlflowClient  # lazy: an optional extra ([mlflow])

        db = sqlite_file(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment_id = self._experiment_id()
        tags = tags | {"verticals.run_dir": str(self.run_dir)}
        previous = self._unfinished_run(experiment_id) if resume else None
        if previous is not None:
            self.run_id, logged = previous.info.run_id, previous.data.params
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id, logged = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id, {}
        # MLflow refuses to change a logged parameter: a resumed run keeps the values it started with
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:self.max_param]) for k, v in params.items()
                                                   if k not in logged])

    def log_metrics(self, metrics, step) -> None:
        from mlflow.entities import Metric  # lazy: an optional extra ([mlflow])

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifacts(self, paths) -> None:
        for path in map(Path, paths):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        if self.client is not None and self.run_id:
            self.client.set_terminated(self.run_id, status)

    def describe(self) -> dict:
        return {"backend": "mlflow", "uri": self.uri, "experiment": self.experiment, "run_id": self.run_id}


# ---------------------------------------------------------------- TensorBoard

class TensorBoardTracker:
    def __init__(self, log_dir: Path, *, own_dir: bool):
        _require("tensorboard", EXTRA_MODULES["tensorboard"])
        self.log_dir, self.own_dir = Path(log_dir), own_dir  # own_dir: inside the run directory
        self.writer, self.params, self.tags = None, {}, set()

    def start(self, run_name, params, tags, *, resume) -> None:
        from torch.utils.tensorboard import SummaryWriter  # lazy: torch costs seconds of start-up

        if not resume and self.own_dir:  # a run started again (--overwrite) drops its old curves
            for stale in self.log_dir.glob("events.out.tfevents.*"):
                stale.unlink()
        elif not resume and any(self.log_dir.glob("events.out.tfevents.*")):  # another run of that name
            self.log_dir = self.log_dir.with_name(f"{self.log_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.params = params
        lines = [f"    {k}: {v}" for k, v in params.items()] + [f"    tag {k}: {v}" for k, v in tags.items()]
        self.writer.add_text("config", "\n".join(lines))  # indented: TensorBoard's markdown shows code

    def log_metrics(self, metrics, step) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
            self.tags.add(key)
        self.writer.flush()  # a UI watching the run sees each point as it comes

    def log_artifacts(self, paths) -> None:
        """TensorBoard keeps no files: markdown and YAML become text, PNG plots images."""
        from PIL import Image  # lazy: comes with the [tensorboard] extra

        files = [f for p in map(Path, paths) for f in (sorted(p.rglob("*")) if p.is_dir() else [p])]
        for path in files:
            if path.suffix in (".md", ".yaml") and path.name != "config.yaml":  # the config went in at start
                self.writer.add_text(path.stem, path.read_text())
            elif path.suffix == ".png":
                image = np.asarray(Image.open(path).convert("RGB"))
                self.writer.add_image(f"plots/{path.stem}", image, dataformats="HWC")

    def end(self, status: str = "FINISHED") -> None:
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams  # lazy: torch costs seconds of start-up

        # HParams: the config beside every scalar's last value (read from the scalars of this run)
        for summary in hparams(self.params, dict.fromkeys(sorted(self.tags), 0.0)):  # values unused: tags
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("status", status)
        self.writer.close()
        self.writer = None

    def describe(self) -> dict:
        return {"backend": "tensorboard", "log_dir": str(self.log_dir)}


# ---------------------------------------------------------------- what recipes hold

class RunTracking:
    """A run's tracker, guarded: the first failure of the backend is warned about once on stderr
    and the backend is dropped (told the run FAILED, quietly, if it still answers); the run goes on.
    An unfinished run (an exception, Ctrl-C) is ended as FAILED when the process exits."""

    def __init__(self, backend: Tracker, name: str = "none"):
        self.backend, self.name, self.error = backend, name, ""
        self.active = name != "none"

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if not self.active:
            return
        try:
            fn(*args, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure: the run must survive it
            self.active, self.error = False, f"{what}: {type(exc).__name__}: {exc}"
            print(f"verticals: {self.name} tracking failed while {what} ({type(exc).__name__}: {exc}); "
                  f"training goes on and the run directory is complete, but the rest of this run is not "
                  f"sent to {self.name}", file=sys.stderr)
            self._end_quietly("FAILED")

    def _end_quietly(self, status: str) -> None:
        atexit.unregister(self._end_quietly)
        try:
            self.backend.end(status)
        except Exception:  # noqa: BLE001 - already warned, or the process is exiting
            pass

    def start(self, cfg, run_dir: Path, *, resume: bool = False) -> None:
        """Start tracking `cfg`'s run into `run_dir` (after the directory is claimed)."""
        if not self.active:
            return

        config = to_dict(cfg)
        tags = {"verticals.recipe": str(config.get("name", "")), "verticals.task": str(config.get("task", ""))}
        tags |= {"verticals.mode": str(config["mode"])} if "mode" in config else {}
        self._call("starting the run", self.backend.start, Path(run_dir).name, flat_params(config), tags,
                   resume=resume)
        if self.active:
            atexit.register(self._end_quietly, "FAILED")

    def log_row(self, row: dict) -> None:
        """An engine metrics row ({"step": n, "train_loss": ...}): its numbers at step n."""
        if not self.active:
            return
        metrics = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        if metrics:
            self._call("logging metrics", self.backend.log_metrics, metrics, int(row.get("step", 0)))

    def finish(self, report: dict, run_dir: Path, step: int = 0) -> None:
        """The report's final metrics at `step`, the run's files, and the end of the run."""
        if not self.active:
            return
        self._call("logging the final metrics", self.backend.log_metrics, final_metrics(report), step)
        self._call("logging the report files", self.backend.log_artifacts, run_files(run_dir))
        if self.active:
            self.active = False
            atexit.unregister(self._end_quietly)
            try:
                self.backend.end("FINISHED")
            except Exception as exc:  # noqa: BLE001 - the run is done; say so and return it
                self.error = f"ending the run: {type(exc).__name__}: {exc}"
                print(f"verticals: {self.name} tracking failed while ending the run ({exc})", file=sys.stderr)

    def describe(self) -> dict:
        """The report's `tracking` section ({} without tracking)."""
        if self.name == "none":
            return {}
        return self.backend.describe() | ({"error": self.error} if self.error else {})


def open_tracker(cfg, run_dir: Path) -> RunTracking:
    """The tracker `cfg.tracking` asks for (a no-op one on processes other than the main one);
    UserError now, before the run claims its directory, when the backend's extra is missing."""
    settings = cfg.tracking
    backend = settings.backend
    if backend == "none" or not is_main():
        return RunTracking(NoTracker())
    run_dir = Path(run_dir)
    if backend == "mlflow":
        experiment = settings.experiment or cfg.name or "verticals"
        return RunTracking(MlflowTracker(mlflow_uri(settings.uri, run_dir), experiment, run_dir), backend)
    if backend == "tensorboard":
        log_dir = Path(settings.uri).expanduser() / run_dir.name if settings.uri else run_dir / "tensorboard"
        return RunTracking(TensorBoardTracker(log_dir, own_dir=not settings.uri), backend)
    raise UserError(f"bad value for 'tracking': {backend!r}; choose one of none, {', '.join(EXTRA_MODULES)}")


def tracking_installed(value: str) -> str:
    return missing_extra(value)


@dataclass(frozen=True)
class TrackingConfig:
    """Where a run is also tracked (core.runs.tracking); `tracking=mlflow` on the command line sets `backend`."""

    backend: str = setting("none", choices=("none", "mlflow", "tensorboard"), check=tracking_installed)
    uri: str = ""  # mlflow: tracking URI or a folder for a SQLite store; tensorboard: log root; "" = beside the run
    experiment: str = ""  # mlflow experiment; "" = the recipe's name
