"""Which prediction log a `--log` / `--feedback` value names: an SQLite file or a PostgreSQL URL.

`open_prediction_log(target, ...)` opens core.mlops.feedback.PredictionLog for a path (the default:
one file, one process) and core.mlops.feedback_postgres.PostgresPredictionLog for a
`postgresql://` (or `postgres://`) URL (one database that several service replicas share). Both
have the methods of `PredictionStore`, so the service, the drift report, selection and retraining
take either.
Leaves out: the logs themselves (feedback, feedback_postgres).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Protocol

from core.foundation.errors import UserError
from core.foundation.postgres import is_database_url, redacted
from core.mlops.feedback import FeedbackExample, PredictionLog
from core.mlops.feedback_postgres import PostgresPredictionLog


class PredictionStore(Protocol):
    """What both prediction logs offer (core.mlops.feedback's docstring says what each means)."""

    backlog_rows: int
    dropped_rows: int

    def log(self, rows: list[dict], model_version: str, *, label_key: str = "label") -> list[str]: ...

    def record_feedback(self, request_id: str, label: str, text: str | None = None) -> dict: ...

    def labelled(self, *, since: float | None = None) -> list[FeedbackExample]: ...

    def unlabelled(self) -> list[dict]: ...

    def window_stats(self, *, model_version: str | None = None, since: float | None = None,
                     until: float | None = None) -> dict: ...

    def model_versions(self) -> dict[str, int]: ...

    def counts(self) -> dict: ...

    def close(self) -> None: ...


def shown(target) -> str:
    """`target` for messages and reports (a URL without its password)."""
    return redacted(target) if is_database_url(target) else str(target)


def open_prediction_log(target: str | os.PathLike, *, must_exist: bool = False, **options) -> PredictionStore:
    """The prediction log at `target` (a path or a PostgreSQL URL). `options`: the logs' shared
    keywords (store_text, max_rows, max_age_days, source, prune_every, clock; `outage` for
    PostgreSQL). `must_exist`: a reader's open, refusing a missing file or a database without the
    log's tables instead of creating one."""
    if is_database_url(target):
        return PostgresPredictionLog(target, must_exist=must_exist, **options)
    options.pop("outage", None)  # a local file has no outage to wait out
    path = Path(target).expanduser()
    if must_exist and not path.is_file():
        raise UserError(f"{path} does not exist; give the prediction log a `verticals serve` wrote (--log), or a "
                        f"postgresql:// URL")
    return PredictionLog(path, **options)


def reader_options() -> dict:
    """Options for opening a log to read it: no retention (a report must not prune what the service keeps)."""
    return {"max_rows": sys.maxsize, "max_age_days": None}
