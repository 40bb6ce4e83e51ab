"""Which registry a directory is: a file registry (registry.json) or one whose state is in PostgreSQL.

`open_registry(path, state)` opens core.mlops.registry.ModelRegistry for a directory holding
registry.json, core.mlops.registry_postgres.PostgresRegistry for one holding registry-state.json
(then `state`, or the environment's VERTICALS_REGISTRY_STATE, must be its database URL), and for a
new directory the PostgreSQL one when a URL is given, else the file one. `is_registry(path)` says
whether a directory already is either.
Leaves out: the registries themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.postgres import is_database_url
from core.mlops.registry import REGISTRY_FILE, STATE_MARKER, ModelRegistry

STATE_ENV = "VERTICALS_REGISTRY_STATE"
REGISTRY_STATE_HELP = ("a postgresql:// URL: the registry's state (champion, versions) in that database, for several "
                       f"hosts sharing DIR on shared storage (default: env {STATE_ENV})")


def is_registry(path: str | os.PathLike) -> bool:
    path = Path(path).expanduser()
    return (path / REGISTRY_FILE).is_file() or (path / STATE_MARKER).is_file()


def open_registry(path: str | os.PathLike, state: str | None = None) -> ModelRegistry:
    """The registry in `path` (see the module docstring); `state`: a postgresql:// URL or None."""
    path = Path(path).expanduser()
    if (path / REGISTRY_FILE).is_file():
        return ModelRegistry(path)
    state = state or os.environ.get(STATE_ENV) or None
    if state is not None and not is_database_url(state):
        raise UserError(f"--registry-state must be a postgresql:// URL, got {state[:40]!r}")
    if state is None:
        return ModelRegistry(path)  # a new file registry, or the error naming the missing URL
    from core.mlops.registry_postgres import PostgresRegistry  # lazy: psycopg only for database registries

    return PostgresRegistry(path, state)
