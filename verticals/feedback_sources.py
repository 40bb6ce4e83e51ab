"""Where labelled feedback comes from: a database file -> core.mlops.feedback.FeedbackExample rows.

`read_feedback(path)` takes a postgresql:// URL as the support prediction log its service replicas
share (core.mlops.feedback_postgres; the database must hold the log's tables). Otherwise it looks at
the SQLite file's tables (opened read-only first, so a wrong path never creates a database): a support prediction log (tables `predictions` + `feedback`, written
by the support service) -> core.mlops.feedback.PredictionLog.labelled(); a finance monitor database
(table `document_labels`, written by the analyst's page) ->
solutions.finance.monitor.feedback.labelled_documents. Anything else is a UserError naming what
was expected. Lives in the app layer because it knows the solutions' databases; core.mlops.retrain
takes the examples.
Leaves out: retraining (core.mlops.retrain) and the registry (core.mlops.registry).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core.foundation.errors import UserError
from core.mlops.prediction_logs import is_database_url, open_prediction_log, reader_options
from solutions.finance.monitor.feedback import labelled_documents

EXPECTED = ("a support prediction log (tables predictions + feedback, from `verticals serve`; a file or a "
            "postgresql:// URL) or a finance "
            "monitor database (table document_labels, from `verticals finance dashboard`)")


def database_tables(path: Path) -> set[str]:
    """The table names of the SQLite file at `path`, opened read-only; UserError when it is none."""
    if not path.is_file():
        raise UserError(f"feedback database not found: {path}; give {EXPECTED}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is not an SQLite database ({exc}); give {EXPECTED}") from None


def read_feedback(path) -> list:
    """Every labelled text in the feedback database at `path` (see the module docstring)."""
    if is_database_url(path):
        with open_prediction_log(path, must_exist=True, **reader_options()) as log:
            return log.labelled()
    path = Path(path).expanduser()
    tables = database_tables(path)
    if {"predictions", "feedback"} <= tables:
        # no retention while reading: opening with the service's limits would prune rows
        with open_prediction_log(path, **reader_options()) as log:
            return log.labelled()
    if "document_labels" in tables:
        return labelled_documents(path)
    shown = ", ".join(sorted(tables)) or "none"
    raise UserError(f"{path} holds no feedback this version reads (its tables: {shown}); give {EXPECTED}")
