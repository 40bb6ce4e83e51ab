"""A model registry directory: the versions of one deployed classifier, their lineage and which is live.

    registry/
      registry.json    {"versions": [...], "champion": "v0002", "champion_stack": ["v0001", "v0002"],
                        "generation": 3, "events": [...]}
      runs/v0001/      a full run directory per version (copied in by `register`)
      .lock            fcntl lock file: one writer at a time

Each version records its run (relative `runs/<version>`, or an absolute path with copy=False),
its parent version, status (candidate | champion | retired | rejected), the run's metrics and
cost, the promotion gate's verdict (core.mlops.gate.gate), and who promoted it, when and why.
Status moves only along TRANSITIONS; one version is champion at a time. `champion_stack` is the
order in which versions became champion: `promote` pushes, `rollback` pops (so rolling back twice
goes two promotions back, never flip-flops between two versions). `generation` counts champion
changes: `state_token()` is cheap (a stat, and a re-read of a few KB only when the file changed)
and differs whenever the champion does, for services that poll it (solutions.support hot swap).

Every change is a read-modify-write of registry.json under an exclusive `fcntl.flock` on `.lock`
(two retrains registering at once both land, with different version numbers) and is written
atomically (temp file, fsync, rename, fsync of the directory), so a reader (no lock) sees the old
file or the new one, never half of either. A run is copied into `runs/.incoming-*` first and
renamed into place, so a crash mid-copy leaves no half version behind.
Several hosts: core.mlops.registry_postgres.PostgresRegistry keeps this same state in one
PostgreSQL row (row lock instead of fcntl, which network file systems do not honour), the runs in
the shared directory; core.mlops.registries.open_registry picks the backend.
Hand-written (no library): MLflow's model registry needs its tracking server or database and
gives neither file locking nor a champion stack; this is ~200 lines of stdlib.
Leaves out: deciding whether to promote (core.mlops.gate.gate) and serving (solutions.support).
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from core.foundation.durable import write_json_atomically
from core.foundation.errors import UserError

REGISTRY_FILE = "registry.json"
STATE_MARKER = "registry-state.json"  # in a registry whose state is in PostgreSQL (core.mlops.registry_postgres)
STATUSES = ("candidate", "champion", "retired", "rejected")
# from -> the statuses a version may move to (rejected/retired -> champion: a person overrides the gate or
# restores an old version; a rejected or retired version may also be registered straight away)
TRANSITIONS = {"candidate": {"champion", "rejected"}, "champion": {"retired"},
               "retired": {"champion"}, "rejected": {"champion"}}
USER_ENV = "VERTICALS_USER"


def empty_state() -> dict:
    return {"versions": [], "champion": None, "champion_stack": [], "generation": 0, "events": []}


def require_new_registry_dir(path: Path, allowed: set[str], missing: str = REGISTRY_FILE) -> None:
    """Refuse a directory that holds anything but `allowed` names (or runs): a registry starts in an
    empty or new directory (`missing`: what the error says it lacks); then make its runs/ folder."""
    leftovers = [p.name for p in path.iterdir()] if path.is_dir() else []
    runs = path / "runs"
    if set(leftovers) - allowed or (runs.is_dir() and any(runs.iterdir())):
        raise UserError(f"{path} is not empty and holds no {missing}: give an empty or new directory for a registry")
    runs.mkdir(parents=True, exist_ok=True)


def current_user() -> str:
    """Who is acting: env VERTICALS_USER, else the login name, else "unknown"."""
    if os.environ.get(USER_ENV):
        return os.environ[USER_ENV]
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_summary(run_dir: Path) -> tuple[dict, dict]:
    """(metrics, cost) a version records: per split n / accuracy / macro_f1 (a multi-label run:
    exact_set_accuracy / micro_f1 / macro_f1), and the cost ledger."""
    report_file = run_dir / "report.json"
    if not report_file.is_file() or not (run_dir / "model" / "classifier.json").is_file():
        raise UserError(f"{run_dir} is not a finished classifier run (needs report.json and model/classifier.json); "
                        f"register a run made by `verticals train` or `verticals retrain`")
    report = json.loads(report_file.read_text())
    kept = ("n", "accuracy", "macro_f1", "exact_set_accuracy", "micro_f1")
    metrics = {split: {k: v for k, v in values.items() if k in kept}
               for split, values in (report.get("metrics") or {}).items() if isinstance(values, dict)}
    cost = {k: v for k, v in (report.get("cost") or {}).items()
            if k in ("wall_seconds", "cpu_seconds", "peak_rss_mb", "trainable_params", "train_samples")}
    if "fit" in report:
        cost["train_seconds"] = report["fit"].get("train_seconds")
    return metrics, cost


class ModelRegistry:
    """The registry in `path` (created if missing). Reads take no lock; every write takes it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} is a file, not a registry directory")
        self.file = self.path / REGISTRY_FILE
        self._cache: tuple[tuple, dict] | None = None  # (stat key, parsed registry.json)
        if (self.path / STATE_MARKER).is_file() and not self.file.is_file():
            raise UserError(f"{self.path} keeps its state in PostgreSQL ({STATE_MARKER}): give its database URL "
                            f"(--registry-state postgresql://... or VERTICALS_REGISTRY_STATE)")
        if not self.file.is_file():
            require_new_registry_dir(self.path, allowed={".lock", "runs"})
            with self._locked():
                pass  # writes the empty registry under the lock (another process may be creating it too)

    def __repr__(self) -> str:
        state = self._state()
        return (f"{type(self).__name__}({', '.join(map(repr, self._repr_location()))}, "
                f"champion={state.get('champion')!r}, {len(state['versions'])} versions)")

    def _repr_location(self) -> tuple[str, ...]:
        return (str(self.path),)

    # ------------------------------------------------------------ reading
    def _state(self) -> dict:
        try:
            st = os.stat(self.file)
        except FileNotFoundError:
            raise UserError(f"{self.path} is not a model registry (no {REGISTRY_FILE})") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is None or self._cache[0] != key:
            try:
                self._cache = (key, json.loads(self.file.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise UserError(f"{self.file} is not valid JSON ({exc.msg}); restore it from a backup") from None
        return self._cache[1]

    def versions(self) -> list[dict]:
        """Every version's record, oldest first (copies: changing them changes nothing)."""
        return json.loads(json.dumps(self._state()["versions"]))

    def champion(self) -> str | None:
        return self._state().get("champion")

    def champion_path(self) -> Path | None:
        state = self._state()  # once: the champion and its record from one snapshot (one query on PostgreSQL)
        version = state.get("champion")
        return None if version is None else self._run_path(self._record(state, version))

    def version_path(self, version: str) -> Path:
        return self._run_path(self._record(self._state(), version))

    def _run_path(self, record: dict) -> Path:
        run = Path(record["run"])
        return run if run.is_absolute() else self.path / run

    def state_token(self) -> str:
        """Changes whenever the champion changes (its generation and name); a stat per call."""
        state = self._state()
        return f"{state.get('generation', 0)}:{state.get('champion')}"

    def events(self) -> list[dict]:
        return json.loads(json.dumps(self._state().get("events", [])))

    def find(self, run_dir: str | os.PathLike) -> str | None:
        """The version whose run is `run_dir` (its copy here, or the directory it was copied from)."""
        target = Path(run_dir).expanduser().resolve()
        for record in self._state()["versions"]:  # one read of the state (a database round trip for PostgresRegistry)
            paths = [self._run_path(record)] + ([Path(record["source"])] if record.get("source") else [])
            if any(p.resolve() == target for p in paths):
                return record["version"]
        return None

    @staticmethod
    def _record(state: dict, version: str) -> dict:
        for record in state["versions"]:
            if record["version"] == version:
                return record
        known = ", ".join(r["version"] for r in state["versions"]) or "none yet"
        raise UserError(f"unknown version '{version}'; the registry holds: {known}")

    # ------------------------------------------------------------ writing
    @contextmanager
    def _locked(self):
        """The registry's state under the exclusive lock; written back atomically on a clean exit."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.file.read_text(encoding="utf-8")) if self.file.is_file() else empty_state()
                yield state
                write_json_atomically(self.file, state)
                self._cache = None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _move(record: dict, to: str) -> None:
        if to not in TRANSITIONS[record["status"]]:
            allowed = ", ".join(sorted(TRANSITIONS[record["status"]]))
            raise UserError(f"{record['version']} is {record['status']}: it can become {allowed}, not {to}")
        record["status"] = to

    @staticmethod
    def _crown(state: dict, version: str, *, by: str, reason: str, event: str) -> None:
        """Make `version` champion (the old one retires) and log it; `event` names the action."""
        record, previous = ModelRegistry._record(state, version), state.get("champion")
        if previous == version:
            raise UserError(f"{version} is already the champion")
        if previous is not None:
            ModelRegistry._move(ModelRegistry._record(state, previous), "retired")
        ModelRegistry._move(record, "champion")
        record.update(promoted_by=by, promoted_at=_now(), reason=reason)
        state["champion"] = version
        state["generation"] = state.get("generation", 0) + 1
        state.setdefault("events", []).append({"event": event, "version": version, "previous": previous,
                                               "by": by, "at": record["promoted_at"], "reason": reason})

    def register(self, run_dir: str | os.PathLike, *, parent: str | None = None, copy: bool = True,
                 status: str = "candidate", gate: dict | None = None, reason: str = "", by: str | None = None) -> str:
        """Add a finished run as the next version (copied under runs/<version>; copy=False keeps the
        path). `status`: candidate, rejected (the gate said no), or champion (promoted now, `by`
        whom: default current_user()). Returns the version, e.g. "v0003"."""
        run_dir = Path(run_dir).expanduser()
        if status not in ("candidate", "rejected", "champion"):
            raise UserError(f"a new version starts as candidate, rejected or champion, not {status!r}")
        metrics, cost = _run_summary(run_dir)
        with self._locked() as state:
            if parent is not None:
                self._record(state, parent)
            version = f"v{len(state['versions']) + 1:04d}"
            relative = Path("runs") / version
            if copy:
                shutil.rmtree(self.path / relative, ignore_errors=True)  # an orphan of a crash before the write
                incoming = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=self.path / "runs"))
                try:
                    shutil.copytree(run_dir, incoming / "run", ignore=shutil.ignore_patterns("checkpoint*"))
                    os.replace(incoming / "run", self.path / relative)
                finally:
                    shutil.rmtree(incoming, ignore_errors=True)
            record = {"version": version, "run": str(relative) if copy else str(run_dir.resolve()),
                      "source": str(run_dir.resolve()), "parent": parent, "created_at": _now(),
                      "status": "candidate" if status == "champion" else status, "metrics": metrics, "cost": cost,
                      "gate": gate, "promoted_by": None, "promoted_at": None, "reason": reason}
            state["versions"].append(record)
            state.setdefault("events", []).append({"event": "register", "version": version, "parent": parent,
                                                   "status": record["status"], "by": by or current_user(),
                                                   "at": record["created_at"], "reason": reason})
            if status == "champion":
                self._crown(state, version, by=by or current_user(), reason=reason or "registered as champion",
                            event="promote")
                state.setdefault("champion_stack", []).append(version)
        return version

    def promote(self, version: str, *, by: str, reason: str) -> None:
        """Make `version` the champion (a candidate, or a retired/rejected one a person restores)."""
        with self._locked() as state:
            self._crown(state, version, by=by, reason=reason, event="promote")
            state.setdefault("champion_stack", []).append(version)

    def reject(self, version: str, *, by: str, reason: str) -> None:
        """Mark a candidate rejected (it stays in the lineage, never served)."""
        with self._locked() as state:
            self._move(self._record(state, version), "rejected")
            state.setdefault("events", []).append({"event": "reject", "version": version, "by": by,
                                                   "at": _now(), "reason": reason})

    def rollback(self, *, by: str, reason: str = "rollback") -> str:
        """Champion -> the champion before it (the one its promotion replaced); returns that version."""
        with self._locked() as state:
            stack = state.setdefault("champion_stack", [])
            if len(stack) < 2:
                raise UserError(f"nothing to roll back to: {state.get('champion') or 'no version'} is the only "
                                f"champion this registry has had")
            stack.pop()
            self._crown(state, stack[-1], by=by, reason=reason, event="rollback")
            return stack[-1]
