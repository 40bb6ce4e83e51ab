"""What the support service serves, and how it follows a model registry without a restart.

- `ServedModel`: a router, the id of the model it runs (`version`) and that run's drift baseline.
- `Deployment`: the one reference the micro-batcher's routing function reads, once per batch, so
  a swap lands between batches: every batch runs on one model and every result names it.
- `model_version(run_dir)`: the stable id of a served run. Served from a registry (or a run that
  lives in one): the registry's version, e.g. `v0002`. Otherwise `<run dir name>-<8 hex>`, the
  hex a sha256 of the model's small files (classifier.json, head and out-of-scope weights) and
  the run's report.json: cheap at start-up whatever the model size (no hashing of encoder
  weights), unchanged when the same run is served again, new when the directory is trained again
  (report.json records that training's metrics and timings).
- `RegistryWatcher`: a thread that polls `ModelRegistry.state_token()` every `interval` s; on a
  change it loads the champion on its own thread (router, baseline, one warm-up call), then swaps.
  A failed load keeps the served model, logs why, and is not retried until the token changes
  again (promote another version, or roll back).
Leaves out: the HTTP layer (solutions.support.service) and the registry itself (core.mlops.registry).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from core.evaluation.drift_baseline import load_drift_baseline
from core.foundation.errors import UserError
from core.mlops.registries import is_registry, open_registry

log = logging.getLogger("verticals.support.deployment")

VERSION_FILES = ("model/classifier.json", "model/head.safetensors", "model/ood.safetensors", "report.json",
                 "classifier.json", "head.safetensors", "ood.safetensors")


@dataclass(frozen=True)
class ServedModel:
    """`router`: an IntentRouter (or anything with `route_all(texts) -> (rows, embeddings)`, or at
    least `route_batch(texts) -> rows`); `baseline`: core.evaluation.drift_baseline.DriftBaseline of its run, or None."""

    router: Any
    version: str
    baseline: Any = None
    path: str | None = None

    def route(self, texts: list[str]):
        """(rows, embeddings or None)."""
        if hasattr(self.router, "route_all"):
            return self.router.route_all(texts)
        return self.router.route_batch(texts), None

    def describe(self) -> dict:
        info = self.router.describe() if hasattr(self.router, "describe") else {}
        return {**info, "model_version": self.version, "run": self.path, "drift_baseline": self.baseline is not None}


class FunctionRouter:
    """A plain `route_batch(texts) -> rows` function as a router (tests, custom models)."""

    def __init__(self, route_batch: Callable[[list[str]], list], info: dict | None = None):
        self.route_batch, self.info = route_batch, info

    def describe(self) -> dict:
        return dict(self.info or {})


class Deployment:
    """The served model; `swap` replaces it (a reference assignment: atomic for the reading thread).
    `on_swap(old, new)` callbacks run after each swap (the drift monitor resets its window there)."""

    def __init__(self, served: ServedModel):
        self.current = served
        self.on_swap: list[Callable[[ServedModel, ServedModel], None]] = []

    def swap(self, served: ServedModel) -> ServedModel:
        old, self.current = self.current, served
        log.warning("now serving model %s (was %s)", served.version, old.version)
        for callback in self.on_swap:
            callback(old, served)
        return old


def _registry_version(run_dir: Path) -> str | None:
    """The registry version of `run_dir` when it lies in a registry's runs/ folder, else None."""
    root = run_dir.resolve().parent.parent
    if run_dir.resolve().parent.name != "runs" or not is_registry(root):
        return None
    try:
        return open_registry(root).find(run_dir)
    except UserError as exc:  # e.g. a database registry without its URL here: the run's own id serves
        log.warning("cannot read the registry %s (%s); identifying %s by its files", root, exc, run_dir.name)
        return None


def model_version(run_dir: str | Path) -> str:
    """The stable id of a run (see the module docstring)."""
    run_dir = Path(run_dir)
    run_dir = run_dir.parent if run_dir.name == "model" and (run_dir / "classifier.json").is_file() else run_dir
    version = _registry_version(run_dir)
    if version:
        return version
    digest = hashlib.sha256()
    for name in VERSION_FILES:
        path = run_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return f"{run_dir.resolve().name}-{digest.hexdigest()[:8]}"


def load_baseline(run_dir: str | Path, settings=None):
    """core.evaluation.drift_baseline.DriftBaseline of a run, or None (runs trained before baselines were saved: the
    monitor then reports counts only). `settings` (RouterSettings): sets the baseline's fallback
    rate to what this router would have handed over on the validation rows."""
    baseline = load_drift_baseline(run_dir)
    if baseline is not None and settings is not None:
        rate = baseline.fallback_rate_under(settings.min_confidence, settings.min_margin, settings.use_out_of_scope)
        baseline = replace(baseline, fallback_rate=rate)
    return baseline


def load_served(run_dir: str | Path, make_router: Callable[[Path], Any], version: str | None = None) -> ServedModel:
    """The router of `run_dir` (`make_router(path)`, e.g. IntentRouter.from_run with the CLI's
    settings), its version and baseline, warmed up by one call so the first request after a swap
    pays no one-off cost."""
    run_dir = Path(run_dir)
    router = make_router(run_dir)
    baseline = load_baseline(run_dir, getattr(router, "settings", None))
    served = ServedModel(router, version or model_version(run_dir), baseline, str(run_dir))
    served.route(["warm up"])
    return served


class RegistryWatcher:
    """Follows a core.mlops.registry.ModelRegistry's champion (see the module docstring).
    `load(path, version) -> ServedModel` builds the new model (e.g. `load_served`)."""

    def __init__(self, registry, deployment: Deployment, load: Callable[[Path, str], ServedModel],
                 interval: float = 5.0, on_reload: Callable[[str], None] | None = None):
        self.registry, self.deployment, self.load, self.interval = registry, deployment, load, interval
        self.on_reload = on_reload or (lambda outcome: None)
        self.token = None  # the first check compares the champion with the served version
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="registry-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # a bug here must not stop the watcher: log it, poll again
                log.exception("registry watcher: unexpected error; polling again in %.1f s", self.interval)

    def check(self) -> bool:
        """One poll: load and swap when the champion changed. True when a new model is served."""
        token = self.registry.state_token()
        if token == self.token:
            return False
        self.token = token  # a failed load is not retried until the registry changes again
        version = self.registry.champion()
        if version is None or version == self.deployment.current.version:
            return False
        try:
            served = self.load(Path(self.registry.version_path(version)), version)
        except Exception as exc:
            log.warning("could not load champion %s from the registry (%s: %s); still serving %s",
                        version, type(exc).__name__, exc, self.deployment.current.version)
            self.on_reload("failed")
            return False
        self.deployment.swap(served)
        self.on_reload("swapped")
        return True
