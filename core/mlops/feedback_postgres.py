"""The prediction log in PostgreSQL, shared by several service replicas: `--log postgresql://USER@HOST/DB`.

The same tables, methods and rules as the SQLite `core.mlops.feedback.PredictionLog` (validation,
privacy: hashes unless store_text, the text-matching rule, latest feedback wins, retention by
max_rows keeping rows with feedback and by max_age_days): one database every replica writes, so
feedback on a request routed by another replica finds its row, and drift reports and retraining
read all the traffic. Differences, each for the server's sake:
- Texts: PostgreSQL text cannot hold NUL, so a kept text (logged or sent with feedback) has each
  NUL written as the four characters `\\x00`, as lone surrogates are escaped for SQLite; hashes are
  of the text as routed, so matching is unchanged.
- Order: a `seq` identity column keeps insertion order (SQLite's rowid) for "oldest first".
- Schema: created on open under a transaction-scoped advisory lock (two replicas starting at once
  create it once); feedback.ADDED_COLUMNS missing from an older database are added then (rows kept,
  NULL there), only where missing (ALTER TABLE locks the table even when it changes nothing).
- Retention runs under another advisory lock, so two replicas pruning at once delete the excess once.
- Feedback locks its prediction row (FOR SHARE) so a concurrent prune cannot remove it mid-write.
Outages. A write the server aborts (deadlock, serialization failure) is run again
(core.foundation.postgres.retried). A lost or refused connection marks the database down: reads and feedback raise
PredictionLogUnavailable, and `log` keeps the batch in memory (at most `max_backlog_rows` rows;
beyond that the oldest batches are dropped, counted in `dropped_rows` and logged) and raises
PredictionLogUnavailable carrying the batch's ids. The next call after a backoff (doubling from
`retry_seconds`, capped at `max_retry_seconds`; calls in between fail at once, so a router is never
held up by a dead server) reconnects and writes the kept batches first, oldest first (an id already
stored, from a commit whose answer was lost, is skipped). `close` tries once more and logs (and
counts) what it could not write. Kept rows live in memory: a replica killed during an outage loses them.
Leaves out: connection pooling (one connection per log, shared by threads under a lock, as the
SQLite log), TLS and authentication settings beyond the URL (libpq reads them: sslmode=..., PGPASSFILE).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from core.foundation.errors import UserError
from core.foundation.postgres import cannot_connect, connect, import_psycopg, redacted, retried
from core.mlops.feedback import (
    ADDED_COLUMNS,
    PREDICTION_COLUMNS,
    FeedbackExample,
    PredictionLogUnavailable,
    check_label,
    check_request_id,
    check_text,
    feedback_text,
    prediction_values,
    storable_text,
    summarise_window,
    unknown_request,
    window_filter,
)

log = logging.getLogger("verticals.mlops.prediction_log")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS predictions (
        request_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, model_version TEXT NOT NULL, label TEXT NOT NULL,
        confidence DOUBLE PRECISION NOT NULL, in_scope_score DOUBLE PRECISION, fallback_reason TEXT,
        text_sha256 TEXT NOT NULL, text TEXT, set_confidence DOUBLE PRECISION,
        seq BIGINT GENERATED ALWAYS AS IDENTITY)""",
    "CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts, seq)",
    "CREATE INDEX IF NOT EXISTS predictions_version_ts ON predictions (model_version, ts)",
    "CREATE INDEX IF NOT EXISTS predictions_sha ON predictions (text_sha256)",
    """CREATE TABLE IF NOT EXISTS feedback (
        request_id TEXT PRIMARY KEY REFERENCES predictions (request_id) ON DELETE CASCADE,
        label TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, text TEXT)""",
    "CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts)",
]
_PG_TYPES = {"REAL": "DOUBLE PRECISION", "TEXT": "TEXT", "INTEGER": "BIGINT"}
SCHEMA_LOCK = 7_301_601  # pg_advisory_xact_lock keys (the finance monitor's store uses 7_301_517)
PRUNE_LOCK = 7_301_602
def pg_storable(text: str) -> str:
    """`storable_text`, and each NUL written as `\\x00` (PostgreSQL text cannot hold one)."""
    return storable_text(text).replace("\x00", "\\x00")


def _psycopg():
    return import_psycopg("a postgresql:// prediction log")


class PostgresPredictionLog:
    """The prediction log in a PostgreSQL database several processes share (see the module docstring)."""

    def __init__(self, dsn: str, *, store_text: bool = False, max_rows: int = 1_000_000,
                 max_age_days: float | None = 90, source: str = "prediction_log", prune_every: int | None = None,
                 clock: Callable[[], float] = time.time, must_exist: bool = False, outage: dict | None = None):
        """`must_exist`: refuse a database without the log's tables (readers: a report never creates
        one); `outage`: {"retry_seconds", "max_retry_seconds", "max_backlog_rows"} (defaults 0.5, 30, 10000)."""
        if max_rows < 1:
            raise UserError(f"max_rows must be at least 1, got {max_rows}")
        if max_age_days is not None and not max_age_days > 0:
            raise UserError(f"max_age_days must be positive (or None to keep rows for ever), got {max_age_days}")
        self.dsn, self.shown = dsn, redacted(dsn)
        self.store_text, self.source, self.clock = store_text, source, clock
        self.max_rows, self.max_age_days = max_rows, max_age_days
        self.prune_every = prune_every or max(1, min(1000, max_rows // 10))
        outage = {"retry_seconds": 0.5, "max_retry_seconds": 30.0, "max_backlog_rows": 10_000} | (outage or {})
        self.retry_seconds, self.max_retry_seconds = outage["retry_seconds"], outage["max_retry_seconds"]
        self.max_backlog_rows = outage["max_backlog_rows"]
        self._since_prune, self._lock = 0, threading.RLock()
        self._backlog: deque[list[tuple]] = deque()
        self._kept_rows = 0  # rows in the backlog, kept as a number: /metrics reads it from another thread
        self._dropped, self._delay, self._retry_at, self._down_since = 0, self.retry_seconds, 0.0, None
        self._pg = _psycopg()
        try:
            self._db = self._connect()
        except self._pg.Error as exc:
            raise cannot_connect("PostgreSQL", dsn, exc) from None
        try:
            self._create_schema(must_exist)
            self._pruned()
        except BaseException:
            self._db.close()
            raise

    def _connect(self):
        return connect(self._pg, self.dsn, autocommit=True)

    def _create_schema(self, must_exist: bool) -> None:
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            present = {name for (name,) in self._db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
            if must_exist and not {"predictions", "feedback"} <= present:
                raise UserError(f"{self.shown} holds no prediction log (no predictions and feedback tables): give "
                                f"the database `verticals serve --log` wrote to")
            if not {"predictions", "feedback"} <= present:  # CREATE INDEX locks a table even when it exists
                for statement in SCHEMA:
                    self._db.execute(statement)
            columns = {name for (name,) in self._db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'predictions'")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE predictions ADD COLUMN {name} {_PG_TYPES[kind]}")

    # ------------------------------------------------------------ writes

    def log(self, rows: list[dict], model_version: str, *, label_key: str = "label") -> list[str]:
        """Log one batch in one transaction (after any batches kept from an outage); returns the
        request ids in order. PredictionLogUnavailable (with the ids) when the batch was kept instead."""
        values = prediction_values(rows, model_version, self.clock(), store_text=self.store_text,
                                   label_key=label_key, storable=pg_storable)
        if not values:
            return []
        ids = [v[0] for v in values]
        with self._lock:
            try:
                self._attempt(lambda: (self._write_backlog(), self._insert(values, strict=True)))
            except self._pg.IntegrityError as exc:
                raise UserError(f"a request_id of this batch is already logged ({str(exc).strip()})") from None
            except PredictionLogUnavailable as exc:
                self._keep(values)
                raise PredictionLogUnavailable(f"{exc}; {len(values)} rows kept to write later "
                                               f"({self.backlog_rows} waiting)", ids) from None
        return ids

    def record_feedback(self, request_id: str, label: str, text: str | None = None) -> dict:
        """Store the correct `label` of a logged request (any replica's); returns the stored row.
        Again for the same id: the label is replaced (latest wins)."""
        request_id, label = check_request_id(request_id), check_label(label)
        if text is not None:
            text = check_text(text)
        with self._lock:
            try:  # the kept batches first: a request routed here during an outage may be the one labelled
                return self._attempt(lambda: (self._write_backlog(), self._feedback(request_id, label, text))[1])
            except PredictionLogUnavailable as exc:
                raise PredictionLogUnavailable(f"{exc}; feedback not stored, send it again") from None

    @retried
    def _feedback(self, request_id: str, label: str, text: str | None) -> dict:
        with self._db.transaction():
            found = self._db.execute(
                "SELECT p.text_sha256, p.text, p.label, p.model_version, f.text FROM predictions p LEFT JOIN "
                "feedback f USING (request_id) WHERE p.request_id = %s FOR SHARE OF p", (request_id,)).fetchone()
            if found is None:
                raise unknown_request(request_id)
            sha, logged_text, predicted, version, fed_back = found
            keep = feedback_text(request_id, text, (sha, logged_text), fed_back, pg_storable)
            ts = self.clock()
            self._db.execute(
                "INSERT INTO feedback (request_id, label, ts, text) VALUES (%s, %s, %s, %s) ON CONFLICT (request_id) "
                "DO UPDATE SET label = excluded.label, ts = excluded.ts, text = COALESCE(excluded.text, feedback.text)",
                (request_id, label, ts, keep))
        return {"request_id": request_id, "label": label, "ts": ts, "predicted_label": predicted,
                "model_version": version}

    # ------------------------------------------------------------ reads

    def labelled(self, *, since: float | None = None) -> list[FeedbackExample]:
        """Feedback rows that have a text (logged or sent with the feedback), oldest first."""
        sql = ("SELECT f.request_id, COALESCE(f.text, p.text), f.label, f.ts FROM feedback f "
               "JOIN predictions p USING (request_id) WHERE COALESCE(f.text, p.text) IS NOT NULL")
        args: tuple = ()
        if since is not None:
            sql, args = sql + " AND f.ts >= %s", (since,)
        rows = self._read(sql + " ORDER BY f.ts, f.request_id", args)
        return [FeedbackExample(rid, text, label, ts, self.source) for rid, text, label, ts in rows]

    def unlabelled(self) -> list[dict]:
        """Logged predictions not yet labelled (as PredictionLog.unlabelled), oldest first."""
        keys = ("request_id", "ts", "model_version", "label", "confidence", "text_sha256", "text")
        rows = self._read(
            f"SELECT {', '.join('p.' + k for k in keys)} FROM predictions p LEFT JOIN feedback f USING (request_id) "
            "WHERE f.request_id IS NULL AND p.text_sha256 NOT IN (SELECT q.text_sha256 FROM feedback g "
            "JOIN predictions q USING (request_id)) ORDER BY p.ts, p.seq")
        return [dict(zip(keys, row)) for row in rows]

    def window_stats(self, *, model_version: str | None = None, since: float | None = None,
                     until: float | None = None) -> dict:
        """As PredictionLog.window_stats: predictions in [since, until) (of one model version)."""
        where, args = window_filter(model_version, since, until, "%s")
        return summarise_window(self._read("SELECT confidence, label, fallback_reason, set_confidence FROM "
                                           "predictions" + where + " ORDER BY ts, seq", args))

    def model_versions(self) -> dict[str, int]:
        """model version -> predictions logged for it."""
        return dict(self._read("SELECT model_version, COUNT(*) FROM predictions GROUP BY model_version"))

    def counts(self) -> dict:
        ((predictions, feedback),) = self._read("SELECT (SELECT COUNT(*) FROM predictions), "
                                                "(SELECT COUNT(*) FROM feedback)")
        return {"predictions": predictions, "feedback": feedback}

    @property
    def backlog_rows(self) -> int:
        """Rows routed during an outage, kept to write once the database is back."""
        return self._kept_rows

    @property
    def dropped_rows(self) -> int:
        """Rows given up: the backlog was full, or `close` could not write them."""
        return self._dropped

    def close(self) -> None:
        with self._lock:
            if self._backlog:
                try:
                    self._retry_at = 0.0
                    self._attempt(self._write_backlog)
                except (self._pg.Error, PredictionLogUnavailable) as exc:
                    lost = self._kept_rows
                    self._dropped += lost
                    self._backlog.clear()
                    self._kept_rows = 0
                    log.error("closing the prediction log with %d routed rows not written to %s (%s): they are lost",
                              lost, self.shown, _reason(exc))
            self._db.close()

    def __enter__(self) -> "PostgresPredictionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _read(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._attempt(lambda: self._db.execute(sql, args).fetchall())

    def _attempt(self, work: Callable):
        """work() on a live connection. A connection found lost (the server restarted while this one
        sat idle) is replaced at once and the work run again, once; PredictionLogUnavailable when
        the server is down (the backoff then starts, see _connected)."""
        for attempt in range(2):
            self._connected()
            try:
                return work()
            except (self._pg.OperationalError, self._pg.InterfaceError) as exc:
                lost = self._db.closed or self._db.broken
                if attempt == 0 and lost and self._down_since is None:
                    self._retry_at = 0.0  # was up a moment ago: reconnect now, not after a backoff
                    continue
                self._went_down(exc)
                raise PredictionLogUnavailable(f"{self.shown} is unavailable ({_reason(exc)})") from None

    def _connected(self) -> None:
        """Reconnect a lost connection, once the backoff allows; PredictionLogUnavailable otherwise."""
        if not (self._db.closed or self._db.broken):
            return
        if time.monotonic() < self._retry_at:
            raise PredictionLogUnavailable(f"{self.shown} is unavailable (down for {self._down_for():.1f} s; "
                                           f"next try in {self._retry_at - time.monotonic():.1f} s)")
        try:
            self._db = self._connect()
        except self._pg.Error as exc:
            self._went_down(exc)
            raise PredictionLogUnavailable(f"{self.shown} is unavailable ({_reason(exc)})") from None
        log.warning("reconnected to the prediction log %s (%s)", self.shown,
                    "its connection was lost" if self._down_since is None else f"down for {self._down_for():.1f} s")
        self._delay, self._down_since = self.retry_seconds, None

    def _down_for(self) -> float:
        return 0.0 if self._down_since is None else time.time() - self._down_since

    def _went_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("the prediction log %s is unavailable (%s); retrying with backoff", self.shown, _reason(exc))
        if not (self._db.closed or self._db.broken):
            self._db.close()  # a failure on a live connection (a timeout): start again on a fresh one
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.max_retry_seconds)

    def _keep(self, values: list[tuple]) -> None:
        self._backlog.append(values)
        self._kept_rows += len(values)
        while self._kept_rows > self.max_backlog_rows:
            dropped = self._backlog.popleft()
            self._kept_rows -= len(dropped)
            self._dropped += len(dropped)
            log.error("the prediction log's backlog is over %d rows: %d routed rows dropped unwritten (%d in all)",
                      self.max_backlog_rows, len(dropped), self._dropped)

    def _write_backlog(self) -> None:
        written = 0
        while self._backlog:
            self._insert(self._backlog[0], strict=False)
            done = len(self._backlog.popleft())
            self._kept_rows -= done
            written += done
        if written:
            log.warning("wrote %d routed rows kept during the outage to %s", written, self.shown)

    @retried
    def _insert(self, values: list[tuple], strict: bool) -> None:
        """One transaction: the rows (strict: a known id is an IntegrityError; else skipped), then
        retention every prune_every rows."""
        with self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES "
                            f"({', '.join(['%s'] * len(PREDICTION_COLUMNS))})"
                            + ("" if strict else " ON CONFLICT (request_id) DO NOTHING"), values)
            self._since_prune += len(values)
            if self._since_prune >= self.prune_every:
                self._prune()

    def _pruned(self) -> None:
        with self._db.transaction():
            self._prune()

    def _prune(self) -> None:
        self._since_prune = 0
        self._db.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        if self.max_age_days is not None:
            self._db.execute("DELETE FROM predictions WHERE ts < %s", (self.clock() - self.max_age_days * 86400,))
        (n,) = self._db.execute("SELECT COUNT(*) FROM predictions").fetchone()
        if n > self.max_rows:
            self._db.execute("DELETE FROM predictions WHERE request_id IN (SELECT p.request_id FROM predictions p "
                             "LEFT JOIN feedback f USING (request_id) WHERE f.request_id IS NULL "
                             "ORDER BY p.ts, p.seq LIMIT %s)", (n - self.max_rows,))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
