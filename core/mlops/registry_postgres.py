"""The model registry for several hosts: its state in PostgreSQL, its runs in a shared directory.

`PostgresRegistry(path, url)` is core.mlops.registry.ModelRegistry with one change: the state that
the file registry keeps in registry.json (versions, champion, champion_stack, generation, events;
the same JSON document) is one row of the table `verticals_registry`, and every change is a
read-modify-write of that row under `SELECT ... FOR UPDATE` in one transaction. So two hosts
promoting, rolling back or registering at once are serialised by the database (fcntl locks, which
the file registry uses, are not honoured by many network file systems), and a promote or rollback
is one commit: every replica polling `state_token()` sees the old champion or the new one, never
a half-written state, and swaps within its reload interval. The run directories stay files, under
`path/runs/<version>` as in the file registry: `path` must be storage every host mounts (NFS, a
cloud file share); a run is copied in while the row is locked and renamed into place before the
commit, so no committed version points at a half-copied run.

The row's key is a random id written once into `path/registry-state.json` (core.mlops.registry.
STATE_MARKER, no credentials in it), so hosts that mount the share at different paths find the
same row, and a file-registry open of that directory refuses it instead of starting a second,
diverging state. Connections: one per call (a poll every few seconds costs one local connect),
so a database restart needs no reconnect logic; a failed call raises, and the service's registry
watcher logs it and keeps serving the model it has (solutions.support.deployment.RegistryWatcher).
Leaves out: object storage for the runs (mount it, e.g. with a FUSE driver), schema migrations
(one table, one JSON column).
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

from core.foundation.durable import write_json_atomically
from core.foundation.errors import UserError
from core.foundation.postgres import cannot_connect, connect, import_psycopg, redacted
from core.mlops.registry import REGISTRY_FILE, STATE_MARKER, ModelRegistry, empty_state, require_new_registry_dir

TABLE = "verticals_registry"
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY, state JSONB NOT NULL, generation BIGINT NOT NULL DEFAULT 0, champion TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
SCHEMA_LOCK = 0x7665727469636173  # pg_advisory_xact_lock id: two hosts creating the table at once


def _psycopg():
    return import_psycopg("a registry with --registry-state postgresql://...")


class PostgresRegistry(ModelRegistry):
    """The registry whose runs are in `path` (shared storage) and whose state is in the PostgreSQL
    database at `url` (see the module docstring). Created when `path` holds neither registry."""

    def __init__(self, path: str | os.PathLike, url: str):
        self.path, self.url, self.shown = Path(path).expanduser(), url, redacted(url)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} is a file, not a registry directory")
        if (self.path / REGISTRY_FILE).is_file():
            raise UserError(f"{self.path} is a file registry ({REGISTRY_FILE}); open it without --registry-state, "
                            f"or give a new directory for a registry whose state is in PostgreSQL")
        marker = self.path / STATE_MARKER
        if not marker.is_file():
            require_new_registry_dir(self.path, allowed={"runs"}, missing="registry")
            # two hosts creating it at once: the first marker written stays (os.link refuses to replace)
            tmp = self.path / f".{STATE_MARKER}.{uuid.uuid4().hex}"
            write_json_atomically(tmp, {"backend": "postgresql", "key": uuid.uuid4().hex, "table": TABLE})
            try:
                os.link(tmp, marker)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        try:
            self.key = str(json.loads(marker.read_text(encoding="utf-8"))["key"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{marker} cannot be read ({exc!r}): restore it; its key names the registry's "
                            f"row") from None
        (self.path / "runs").mkdir(parents=True, exist_ok=True)
        with self._connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            db.execute(SCHEMA)
            db.execute(f"INSERT INTO {TABLE}(key, state) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                       (self.key, json.dumps(empty_state())))

    def _repr_location(self) -> tuple[str, ...]:
        return str(self.path), self.shown

    @contextmanager
    def _connection(self):
        pg = _psycopg()
        try:
            db = connect(pg, self.url)
        except pg.Error as exc:
            raise cannot_connect("the registry's PostgreSQL", self.url, exc) from None
        try:
            yield db
        finally:
            db.close()

    def _state(self) -> dict:
        with self._connection() as db:
            row = db.execute(f"SELECT state FROM {TABLE} WHERE key = %s", (self.key,)).fetchone()
        if row is None:
            raise UserError(f"the database at {self.shown} holds no registry {self.key} (named in "
                            f"{self.path / STATE_MARKER}): is this the registry's database?")
        return row[0]

    def state_token(self) -> str:
        """Changes whenever the champion changes: one indexed read of two columns."""
        with self._connection() as db:
            row = db.execute(f"SELECT generation, champion FROM {TABLE} WHERE key = %s", (self.key,)).fetchone()
        return "" if row is None else f"{row[0]}:{row[1]}"

    @contextmanager
    def _locked(self):
        """The state under the row lock; written back in the same transaction on a clean exit."""
        with self._connection() as db, db.transaction():
            row = db.execute(f"SELECT state FROM {TABLE} WHERE key = %s FOR UPDATE", (self.key,)).fetchone()
            if row is None:
                raise UserError(f"the database at {self.shown} holds no registry {self.key}")
            state = row[0]
            yield state
            db.execute(f"UPDATE {TABLE} SET state = %s, generation = %s, champion = %s, updated_at = now() "
                       f"WHERE key = %s", (json.dumps(state), int(state.get("generation", 0)), state.get("champion"),
                                           self.key))
