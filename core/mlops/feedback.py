"""The prediction log and the feedback on it: what a deployed classifier said, and what it should have said.

Two backends, one interface (core.mlops.prediction_logs.open_prediction_log picks by path or URL):
`PredictionLog` here, one SQLite file for one process (the default), and
core.mlops.feedback_postgres.PostgresPredictionLog, one PostgreSQL database shared by several
service replicas. This module holds what both obey (validation, privacy, the text-matching rule,
the window summary); the rest of this docstring is the SQLite log, whose semantics the other keeps.

`PredictionLog` is one SQLite file with two tables:
- predictions(request_id PK, ts, model_version, label, confidence, in_scope_score, fallback_reason,
  text_sha256, text, set_confidence): one row per routed text, written by `log(rows, model_version, label_key=...)`,
  where `rows` are a router's outputs ("text", the predicted label under `label_key` (default
  "label"; a router that names it otherwise passes its key), "confidence", "in_scope_score",
  "fallback_reason"; an optional "request_id", else a new uuid4 hex; a multi-label router's
  "set_confidence", the accuracy estimator's score for it, NULL otherwise). A log written before
  set_confidence existed gets the column on open (ADDED_COLUMNS; its rows keep NULL).
- feedback(request_id PK -> predictions ON DELETE CASCADE, label, ts, text): the correct label for
  a logged request, written by `record_feedback`; the latest answer for an id wins.

Privacy: by default (`store_text=False`) a text is never stored, only its SHA-256 (of the UTF-8
bytes, lone surrogates kept with "surrogatepass"). That is pseudonymisation, not anonymity: a short
text can be found again by hashing guesses. With `store_text=True` texts are kept; a text holding
lone UTF-16 surrogates (not valid Unicode, so SQLite cannot store it) is kept with each surrogate
written as a `\\udXXX` escape. Texts longer than MAX_TEXT_CHARS are refused.

Feedback and the text-matching rule: a feedback row is a training example only with its text. When
the log holds the request's text, `text` is optional; when it does not (the default), the client
must send the text, and it must hash to the logged `text_sha256` exactly (no trimming or case
folding), else UserError: a client cannot attach a label to a text other than the one that was
routed. A text sent that way is stored in the feedback row (the client chose to send it for
labelling). Labels (predicted or fed back, any name: a known label, LABEL_OUT_OF_SCOPE or a new
one) and model versions are 1..MAX_LABEL_CHARS characters of valid Unicode, else UserError.
An unknown request id raises UnknownRequestId (a UserError; HTTP maps it to 404).

Durability: WAL journal, synchronous=FULL, one transaction per `log` batch (all rows or none,
validated before anything is written) and per feedback. One connection per PredictionLog, shared
by threads under a lock (the service logs from its inference thread and records feedback from
request handlers); other processes open their own (busy_timeout waits for a writer).

Retention (checked at open and then every `prune_every` logged rows, inside the writing
transaction): every prediction older than `max_age_days` goes, with its feedback (None: kept for
ever); beyond `max_rows` the oldest predictions WITHOUT feedback go, so human labels are not pushed
out by traffic volume (they still expire with age). The table may exceed max_rows by up to one
pruning interval. Feedback on a pruned request is an unknown id.
Leaves out: embeddings (too big to log per request; core.evaluation.drift.DriftWindow keeps a recent window in
memory), the HTTP endpoint (solutions/support/service.py), finance labels (their monitor database).
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.foundation.durable import open_sqlite, transaction
from core.foundation.errors import UserError
from core.foundation.labels import MAX_LABEL_NAME_CHARS, label_name_problem
from core.foundation.text import encodable

LABEL_OUT_OF_SCOPE = "out_of_scope"
MAX_LABEL_CHARS = MAX_LABEL_NAME_CHARS  # labels, joined label lists (a|b) and model versions
MAX_TEXT_CHARS = 100_000
MAX_ID_CHARS = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions(
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, model_version TEXT NOT NULL, label TEXT NOT NULL,
    confidence REAL NOT NULL, in_scope_score REAL, fallback_reason TEXT, text_sha256 TEXT NOT NULL, text TEXT,
    set_confidence REAL);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions(ts);
CREATE INDEX IF NOT EXISTS predictions_version_ts ON predictions(model_version, ts);
CREATE TABLE IF NOT EXISTS feedback(
    request_id TEXT PRIMARY KEY REFERENCES predictions(request_id) ON DELETE CASCADE,
    label TEXT NOT NULL, ts REAL NOT NULL, text TEXT);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback(ts);
"""


class UnknownRequestId(UserError):
    """Feedback for a request id the log does not hold (never logged, or pruned)."""


class PredictionLogUnavailable(RuntimeError):
    """The log's database cannot be reached now (an outage, not the caller's fault). Raised by `log`
    after the batch was kept in memory to be written once the database is back (`request_ids`: its
    ids, valid for feedback from then on), and by `record_feedback` (nothing stored: send it again)."""

    def __init__(self, message: str, request_ids: list[str] | None = None):
        super().__init__(message)
        self.request_ids = list(request_ids or [])


@dataclass(frozen=True)
class FeedbackExample:
    """A labelled text fed back from a deployment: what core.mlops.retrain learns from."""

    id: str
    text: str
    label: str
    ts: float
    source: str  # "support" | "finance" | ...


def text_sha256(text: str) -> str:
    """SHA-256 hex of the text's UTF-8 bytes (lone surrogates kept, so every str has one)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def storable_text(text: str) -> str:
    """`text`, with lone surrogates written as backslash escapes (SQLite stores only valid UTF-8)."""
    return text if encodable(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_label(value, what: str = "label") -> str:
    """The one label-name rule (core.foundation.labels), for every label the log stores."""
    problem = label_name_problem(value)
    if problem:
        raise UserError(f"{what} {problem}")
    return value


def check_text(value, what: str = "text") -> str:
    if not isinstance(value, str):
        raise UserError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise UserError(f"{what} has {len(value)} characters; at most {MAX_TEXT_CHARS}")
    return value


def check_request_id(value) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not value.isascii() \
            or not all(c.isalnum() or c in "-_" for c in value):
        shown = repr(value)[:80]
        raise UserError(f"request_id {shown} is not an id this log issues (1..{MAX_ID_CHARS} letters, digits, - or _)")
    return value


def _number(value, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise UserError(f"{what} must be a finite number, got {repr(value)[:40]}")
    return float(value)


def _prediction_row(row, i: int, ts: float, model_version: str, kept: Callable[[str], str] | None,
                    label_key: str) -> tuple:
    if not isinstance(row, Mapping):
        raise UserError(f"row {i}: a prediction must be a mapping (a router output), got {type(row).__name__}")
    label = row.get(label_key)
    if label is None:
        raise UserError(f"row {i}: no '{label_key}' (the predicted label)")
    text = check_text(row.get("text"), f"row {i}: text")
    reason = row.get("fallback_reason")
    request_id = check_request_id(row["request_id"]) if row.get("request_id") is not None else uuid.uuid4().hex
    return (request_id, ts, model_version, check_label(label, f"row {i}: label"),
            _number(row.get("confidence"), f"row {i}: confidence"),
            _number(row.get("in_scope_score"), f"row {i}: in_scope_score", optional=True),
            None if reason is None else check_label(reason, f"row {i}: fallback_reason"),
            text_sha256(text), kept(text) if kept else None,
            _number(row.get("set_confidence"), f"row {i}: set_confidence", optional=True))


def prediction_values(rows: list, model_version: str, ts: float, *, store_text: bool, label_key: str,
                      storable: Callable[[str], str] = storable_text) -> list[tuple]:
    """A batch of router outputs as PREDICTION_COLUMNS tuples, every row validated (UserError naming
    the row) before anything is written; `storable` makes a kept text storable in the backend."""
    model_version = check_label(model_version, "model_version")
    kept = storable if store_text else None
    values = [_prediction_row(row, i, ts, model_version, kept, label_key) for i, row in enumerate(rows)]
    if len({v[0] for v in values}) != len(values):
        raise UserError("the batch gives the same request_id twice")
    return values


def unknown_request(request_id: str) -> UnknownRequestId:
    return UnknownRequestId(f"unknown request_id {request_id}: not in this log (never logged, or older than the log "
                            f"keeps)")


def feedback_text(request_id: str, text: str | None, logged: tuple, fed_back_text: str | None,
                  storable: Callable[[str], str] = storable_text) -> str | None:
    """The text-matching rule (module docstring): `logged` is the request's (text_sha256, text) and
    `fed_back_text` the text an earlier feedback on it kept. Returns the text the feedback row keeps
    (None: the log has it already, or none was sent); UserError when the rule is broken."""
    sha, logged_text = logged
    if text is None and logged_text is None and fed_back_text is None:
        raise UserError(f"request {request_id}: the log keeps no texts (store_text off), so send "
                        f"the request's text with the feedback")
    if text is not None and text_sha256(text) != sha:
        raise UserError(f"request {request_id}: the text sent is not the text that was routed "
                        f"(its SHA-256 differs); send the routed text exactly")
    return storable(text) if text is not None and logged_text is None else None


def summarise_window(rows: list[tuple]) -> dict:
    """`window_stats` of (confidence, label, fallback_reason, set_confidence) rows, oldest first."""
    labels: dict[str, int] = {}
    for _, label, _, _ in rows:
        labels[label] = labels.get(label, 0) + 1
    n = len(rows)
    return {"n": n, "confidence": [r[0] for r in rows], "labels": labels,
            "set_confidence": [r[3] for r in rows],
            "fallback_rate": sum(r[2] is not None for r in rows) / n if n else None,
            "out_of_scope_rate": sum(r[2] == LABEL_OUT_OF_SCOPE for r in rows) / n if n else None}


def window_filter(model_version: str | None, since: float | None, until: float | None,
                  placeholder: str = "?") -> tuple[str, list]:
    """The WHERE clause (or "") and its arguments of a window_stats query."""
    where, args = [], []
    for clause, value in (("model_version = ", model_version), ("ts >= ", since), ("ts < ", until)):
        if value is not None:
            where.append(clause + placeholder)
            args.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), args


PREDICTION_COLUMNS = ("request_id", "ts", "model_version", "label", "confidence", "in_scope_score",
                      "fallback_reason", "text_sha256", "text", "set_confidence")
ADDED_COLUMNS = {"set_confidence": "REAL"}  # columns newer than the first schema: added to an older log on open


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """ALTER TABLE ... ADD COLUMN for each ADDED_COLUMNS entry an older log lacks (rows kept, NULL there)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(predictions)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in present:
            db.execute(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")


class PredictionLog:
    """Durable, bounded log of routed predictions and the feedback on them (see the module docstring)."""

    def __init__(self, path, *, store_text: bool = False, max_rows: int = 1_000_000,
                 max_age_days: float | None = 90, source: str = "prediction_log", prune_every: int | None = None,
                 clock: Callable[[], float] = time.time):
        if max_rows < 1:
            raise UserError(f"max_rows must be at least 1, got {max_rows}")
        if max_age_days is not None and not max_age_days > 0:
            raise UserError(f"max_age_days must be positive (or None to keep rows for ever), got {max_age_days}")
        self.path, self.store_text, self.source, self.clock = Path(path), store_text, source, clock
        self.max_rows, self.max_age_days = max_rows, max_age_days
        self.prune_every = prune_every or max(1, min(1000, max_rows // 10))
        self._since_prune, self._lock = 0, threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = open_sqlite(self.path, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            _add_missing_columns(self._db)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not a usable prediction log ({exc}); give a new path or the "
                            f"file the service wrote") from exc
        with self._transaction() as db:
            self._prune(db)

    # ------------------------------------------------------------ writes

    def log(self, rows: list[dict], model_version: str, *, label_key: str = "label") -> list[str]:
        """Log one batch of router outputs, whose predicted label is `row[label_key]`, in one
        transaction; returns their request ids in order."""
        values = prediction_values(rows, model_version, self.clock(), store_text=self.store_text, label_key=label_key)
        if not values:
            return []
        with self._transaction() as db:
            try:
                db.executemany(f"INSERT INTO predictions({', '.join(PREDICTION_COLUMNS)}) "
                               f"VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})", values)
            except sqlite3.IntegrityError as exc:
                raise UserError(f"a request_id of this batch is already logged ({exc})") from exc
            self._since_prune += len(values)
            if self._since_prune >= self.prune_every:
                self._prune(db)
        return [v[0] for v in values]

    def record_feedback(self, request_id: str, label: str, text: str | None = None) -> dict:
        """Store the correct `label` of a logged request (see the text-matching rule above);
        returns the stored row. Again for the same id: the label is replaced (latest wins)."""
        request_id, label = check_request_id(request_id), check_label(label)
        if text is not None:
            text = check_text(text)
        with self._transaction() as db:
            found = db.execute("SELECT p.text_sha256, p.text, p.label, p.model_version, f.text FROM predictions p "
                               "LEFT JOIN feedback f USING(request_id) WHERE p.request_id=?", (request_id,)).fetchone()
            if found is None:
                raise unknown_request(request_id)
            sha, logged_text, predicted, version, fed_back = found
            keep = feedback_text(request_id, text, (sha, logged_text), fed_back)
            ts = self.clock()
            db.execute("INSERT INTO feedback(request_id, label, ts, text) VALUES (?,?,?,?) ON CONFLICT(request_id) DO "
                       "UPDATE SET label=excluded.label, ts=excluded.ts, text=COALESCE(excluded.text, feedback.text)",
                       (request_id, label, ts, keep))
        return {"request_id": request_id, "label": label, "ts": ts, "predicted_label": predicted,
                "model_version": version}

    # ------------------------------------------------------------ reads

    def labelled(self, *, since: float | None = None) -> list[FeedbackExample]:
        """Feedback rows that have a text (logged or sent with the feedback), oldest first."""
        sql = ("SELECT f.request_id, COALESCE(f.text, p.text), f.label, f.ts FROM feedback f "
               "JOIN predictions p USING(request_id) WHERE COALESCE(f.text, p.text) IS NOT NULL")
        args = ()
        if since is not None:
            sql, args = sql + " AND f.ts >= ?", (since,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY f.ts, f.request_id", args).fetchall()
        return [FeedbackExample(rid, text, label, ts, self.source) for rid, text, label, ts in rows]

    def unlabelled(self) -> list[dict]:
        """Logged predictions not yet labelled: no feedback on the request, nor on another request with
        the same text (hash). {"request_id", "ts", "model_version", "label", "confidence",
        "text_sha256", "text" (None when the log keeps hashes only)}, oldest first (what
        solutions.support.labelling chooses from)."""
        sql = ("SELECT p.request_id, p.ts, p.model_version, p.label, p.confidence, p.text_sha256, p.text "
               "FROM predictions p LEFT JOIN feedback f USING(request_id) WHERE f.request_id IS NULL AND "
               "p.text_sha256 NOT IN (SELECT q.text_sha256 FROM feedback g JOIN predictions q USING(request_id)) "
               "ORDER BY p.ts, p.rowid")
        keys = ("request_id", "ts", "model_version", "label", "confidence", "text_sha256", "text")
        with self._lock:
            return [dict(zip(keys, row)) for row in self._db.execute(sql)]

    def window_stats(self, *, model_version: str | None = None, since: float | None = None,
                     until: float | None = None) -> dict:
        """Predictions in [since, until) (of one model version): {"n", "confidence": [...],
        "labels": {label: count}, "fallback_rate", "out_of_scope_rate"} (rates None when n == 0)."""
        where, args = window_filter(model_version, since, until)
        sql = "SELECT confidence, label, fallback_reason, set_confidence FROM predictions"
        with self._lock:
            rows = self._db.execute(sql + where + " ORDER BY ts, rowid", args).fetchall()
        return summarise_window(rows)

    def model_versions(self) -> dict[str, int]:
        """model version -> predictions logged for it."""
        with self._lock:
            return dict(self._db.execute("SELECT model_version, COUNT(*) FROM predictions GROUP BY model_version"))

    def counts(self) -> dict:
        with self._lock:
            (predictions,), (feedback,) = (self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()
                                           for t in ("predictions", "feedback"))
        return {"predictions": predictions, "feedback": feedback}

    @property
    def backlog_rows(self) -> int:
        """Rows waiting for the database (always 0: a local file has no outage to wait out)."""
        return 0

    @property
    def dropped_rows(self) -> int:
        return 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    @contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT under the lock; ROLLBACK on any error (a failed COMMIT too)."""
        with self._lock, transaction(self._db) as db:
            yield db

    def _prune(self, db) -> None:
        self._since_prune = 0
        if self.max_age_days is not None:
            db.execute("DELETE FROM predictions WHERE ts < ?", (self.clock() - self.max_age_days * 86400,))
        (n,) = db.execute("SELECT COUNT(*) FROM predictions").fetchone()
        if n > self.max_rows:
            db.execute("DELETE FROM predictions WHERE rowid IN (SELECT p.rowid FROM predictions p LEFT JOIN feedback f "
                       "USING(request_id) WHERE f.request_id IS NULL ORDER BY p.ts, p.rowid LIMIT ?)",
                       (n - self.max_rows,))
