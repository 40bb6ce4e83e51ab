"""Durable writes on one machine: files replaced atomically, SQLite opened and written crash-safely.

What every store here (the prediction log, the model registry, the finance monitor and its
labels, the recsys index journal) needs, in one place:
- `atomic_write(path, write)`: write a temp file next to `path`, fsync it, rename it over `path`,
  fsync the directory. After a crash `path` holds the old contents or the new, never a mix.
- `write_json_atomically(path, data)`: the same for a JSON document.
- `open_sqlite(path)`: a connection in autocommit mode (transactions are explicit), WAL journal
  (readers never block the writer) and synchronous=FULL (a committed transaction survives a
  power cut, not only a process kill), with a 30 s busy timeout for other writers.
- `transaction(db)`: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception (a failed COMMIT too).
  IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of failing at COMMIT.
Hand-written because the standard library has the pieces (os.replace, os.fsync, sqlite3) but not
their order: Python's sqlite3 transaction handling defers BEGIN and never fsyncs directories.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's: the names in it) contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` a temp file next to `path`, fsync it, rename it over `path`, fsync the
    directory: after a crash `path` holds the old contents or the new, durably."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        fsync_path(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_json_atomically(path: Path, data) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2), encoding="utf-8"))


def open_sqlite(path: Path, *, check_same_thread: bool = True, timeout: float = 30.0) -> sqlite3.Connection:
    """Autocommit connection (explicit transactions), WAL journal, synchronous=FULL."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any error, a failed COMMIT included."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
