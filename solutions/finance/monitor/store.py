"""SQLite storage: documents, scores, mentions, aggregates, alerts, deliveries, offsets, quarantine.

Crash safety rests on one rule: a batch's documents, scores, mentions, quarantined lines, the
windows it made dirty, the stream clock and the source offset after its last line are written in
ONE transaction (`commit_batch`). Killed before the commit, the batch is read again from the old
offset; killed after, it is never read again and its windows are still marked dirty (for the
aggregates) and pending (for the alert rules), so both catch up on restart. The aggregates of one
refresh, every entity it recomputed, are one transaction (`commit_aggregates`) that also clears their
dirty marks; the alerts of closed windows
and their pending deliveries are one transaction (`commit_alerts`) that clears their pending marks.
Re-running the same input adds nothing: documents are keyed by id, quarantined lines by (source,
offset), alerts by (entity, rule, window).

One bad document never blocks a batch: if the batch's rows are refused (a value SQLite cannot
bind or encode), the batch is stored again one document at a time, each under its own savepoint,
and the documents that are still refused are quarantined with the error; the rest commit with
the offset. Errors of the database itself (disk full, I/O) are not the document's fault and
raise, so the batch is retried by the next run. Quarantine records are made storable (lone
surrogates escaped, lengths cut) before they are written.
WAL journal with synchronous=FULL: readers (the report) never block the monitor, and a committed
batch survives a process kill (and a power cut).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.foundation.durable import open_sqlite, transaction
from core.foundation.errors import UserError
from solutions.finance.monitor.aggregate import StreamClock, WindowStats, window_start
from solutions.finance.monitor.lines import printable

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, ts_text TEXT NOT NULL, text TEXT NOT NULL,
    source TEXT, origin TEXT NOT NULL, ingested_at REAL NOT NULL, late INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS scores (
    doc_id TEXT PRIMARY KEY REFERENCES documents(id), p_negative REAL NOT NULL, p_neutral REAL NOT NULL,
    p_positive REAL NOT NULL, score REAL NOT NULL, label TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mentions (
    doc_id TEXT NOT NULL REFERENCES documents(id), entity TEXT NOT NULL, window_start INTEGER NOT NULL,
    PRIMARY KEY (doc_id, entity));
CREATE INDEX IF NOT EXISTS mentions_by_window ON mentions (entity, window_start);
CREATE TABLE IF NOT EXISTS aggregates (
    entity TEXT NOT NULL, window_start INTEGER NOT NULL, window_size INTEGER NOT NULL,
    count INTEGER NOT NULL, negative_count INTEGER NOT NULL, score_sum REAL NOT NULL,
    mean_score REAL NOT NULL, negative_share REAL NOT NULL, ewma REAL NOT NULL,
    PRIMARY KEY (entity, window_start));
CREATE TABLE IF NOT EXISTS dirty (entity TEXT NOT NULL, window_start INTEGER NOT NULL,
    PRIMARY KEY (entity, window_start));
CREATE TABLE IF NOT EXISTS pending (entity TEXT NOT NULL, window_start INTEGER NOT NULL,
    PRIMARY KEY (entity, window_start));
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, entity TEXT NOT NULL, rule TEXT NOT NULL, window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL, value REAL NOT NULL, baseline REAL NOT NULL, detail TEXT NOT NULL,
    evidence TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (entity, rule, window_start));
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id INTEGER NOT NULL REFERENCES alerts(id), sink TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, delivered_at REAL, last_error TEXT,
    PRIMARY KEY (alert_id, sink));
CREATE TABLE IF NOT EXISTS offsets (source_key TEXT PRIMARY KEY, offset INTEGER NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, source_key TEXT NOT NULL, offset INTEGER NOT NULL, line TEXT NOT NULL,
    reason TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (source_key, offset));
"""
# Columns added since the first schema, (table, column, type), added on open to a database that lacks
# them (ALTER TABLE ... ADD COLUMN keeps every row; NULL in an old row means "not recorded then").
# The per-company columns of mentions: NULL -> the document's score stands in (COALESCE in the reads).
ADDED_COLUMNS = (("documents", "late", "INTEGER NOT NULL DEFAULT 0"), ("scores", "model", "TEXT"),
                 ("scores", "sentences", "INTEGER"), ("scores", "sentences_dropped", "INTEGER"),
                 ("scores", "evidence", "TEXT"), ("mentions", "p_negative", "REAL"), ("mentions", "p_neutral", "REAL"),
                 ("mentions", "p_positive", "REAL"), ("mentions", "score", "REAL"), ("mentions", "label", "TEXT"),
                 ("mentions", "sentences", "INTEGER"), ("mentions", "evidence", "TEXT"))
SCORE_EXTRAS = ("model", "sentences", "sentences_dropped", "evidence")  # optional in Record.score
ENTITY_COLUMNS = ("p_negative", "p_neutral", "p_positive", "score", "label", "sentences", "evidence")
EVIDENCE_LIMIT = 50  # document ids kept per alert
ALERT_SENTENCE_DOCUMENTS = 3  # an alert payload carries the evidence sentences of its first documents
QUARANTINE_LINE_CHARS = 2000
# A row the database refuses because of its values, not because the database is failing.
_REFUSED_ROW = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                ValueError, OverflowError, TypeError)


@dataclass(frozen=True)
class Record:
    """One scored document ready to store, with the line it came from (to quarantine it if refused)."""

    document: dict  # id, ts, ts_text, text, source, origin
    score: dict  # doc_id, p_negative, p_neutral, p_positive, score, label; optional: model, sentences,
    #              sentences_dropped, evidence (JSON)
    entities: tuple[str, ...]
    line_start: int
    line: str
    entity_scores: dict = field(default_factory=dict)  # entity -> ENTITY_COLUMNS (scoring.py); missing: NULLs

    def mention(self, entity: str) -> tuple:
        """The entity's own score columns, in ENTITY_COLUMNS order (NULLs when it has none)."""
        own = self.entity_scores.get(entity, {})
        return tuple(own.get(column) for column in ENTITY_COLUMNS)


class StoreReads:
    """The read queries the SQLite and the PostgreSQL store share (window scores, aggregates, the
    last EWMA, evidence, counts), written with `?` placeholders; `_sql` turns them into the driver's style."""

    def _sql(self, query: str) -> str:
        return query

    def window_scores(self, entity: str, since: int, until: int = 2**62, *,
                      on_time: bool = False) -> dict[int, tuple[list[float], list[str]]]:
        """window start -> (scores, labels) of the entity's scored documents in windows in [since, until);
        `on_time`: only documents that arrived before their window closed (what the alert rules see)."""
        out: dict[int, tuple[list[float], list[str]]] = {}
        late = "AND d.late=0" if on_time else ""
        rows = self.db.execute(self._sql(f"SELECT m.window_start, COALESCE(m.score, s.score), COALESCE(m.label, "
                               f"s.label) FROM mentions m JOIN scores s ON "
                               f"s.doc_id = m.doc_id JOIN documents d ON d.id = m.doc_id WHERE m.entity=? AND "
                               f"m.window_start>=? AND m.window_start<? {late} ORDER BY m.window_start, m.doc_id"),
                               (entity, since, until))
        for start, score, label in rows:
            out.setdefault(start, ([], []))
            out[start][0].append(score)
            out[start][1].append(label)
        return out

    def aggregates(self, entity: str, since: int = -2**62, until: int = 2**62) -> list[WindowStats]:
        rows = self.db.execute(self._sql("SELECT window_start, window_size, count, negative_count, score_sum, ewma FROM "
                               "aggregates WHERE entity=? AND window_start>=? AND window_start<? ORDER BY "
                               "window_start"), (entity, since, until))
        return [WindowStats(entity, *row) for row in rows]

    def last_ewma(self, entity: str, before: int) -> float | None:
        row = self.db.execute(self._sql("SELECT ewma FROM aggregates WHERE entity=? AND window_start<? ORDER BY window_start "
                              "DESC LIMIT 1"), (entity, before)).fetchone()
        return row[0] if row else None

    def evidence(self, entity: str, start: int, kind: str) -> list[str]:
        """The on-time documents of a window that show an alert, best first (ties by id), by the entity's
        own score in each (the document's where none was recorded)."""
        order = {"negative": "COALESCE(m.p_negative, s.p_negative) DESC", "lowest": "COALESCE(m.score, s.score) ASC",
                 "all": "d.ts ASC"}[kind]
        where = "AND COALESCE(m.label, s.label)='negative'" if kind == "negative" else ""
        rows = self.db.execute(self._sql(f"SELECT m.doc_id FROM mentions m JOIN scores s ON s.doc_id=m.doc_id JOIN documents d "
                               f"ON d.id=m.doc_id WHERE m.entity=? AND m.window_start=? AND d.late=0 {where} "
                               f"ORDER BY {order}, m.doc_id LIMIT ?"), (entity, start, EVIDENCE_LIMIT))
        return [r[0] for r in rows]

    def evidence_sentences(self, entity: str, doc_ids: list[str]) -> list[dict]:
        """Per document (in the given order): the entity's label, score and evidence sentences in it (the
        document's own where the entity has none; [] for documents scored before sentences were kept)."""
        if not doc_ids:
            return []
        marks = ",".join("?" * len(doc_ids))
        rows = self.db.execute(self._sql(
            f"SELECT m.doc_id, COALESCE(m.label, s.label), COALESCE(m.score, s.score), COALESCE(m.evidence, "
            f"s.evidence), COALESCE(m.sentences, 0) FROM mentions m JOIN scores s ON s.doc_id=m.doc_id "
            f"WHERE m.entity=? AND m.doc_id IN ({marks})"), (entity, *doc_ids)).fetchall()
        found = {r[0]: {"doc_id": r[0], "label": r[1], "score": round(r[2], 6), "sentences": r[4],
                        "evidence": json.loads(r[3]) if r[3] else []} for r in rows}
        return [found[d] for d in doc_ids if d in found]

    def alerts(self) -> list[dict]:
        ids = self.db.execute("SELECT id FROM alerts ORDER BY window_start, entity, rule").fetchall()
        return [self.alert(r[0]) for r in ids]

    def pending_deliveries(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE delivered_at IS NULL").fetchone()[0]

    def delivery_attempts(self, alert_id: int, sink: str) -> int:
        return self.db.execute(self._sql("SELECT attempts FROM deliveries WHERE alert_id=? AND sink=?"),
                               (alert_id, sink)).fetchone()[0]

    def counts(self) -> dict:
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"documents": one("SELECT COUNT(*) FROM documents"), "scored": one("SELECT COUNT(*) FROM scores"),
                "mentions": one("SELECT COUNT(*) FROM mentions"), "alerts": one("SELECT COUNT(*) FROM alerts"),
                "quarantined": one("SELECT COUNT(*) FROM quarantine"),
                "undelivered": one("SELECT COUNT(*) FROM deliveries WHERE delivered_at IS NULL")}

    def quarantine_reasons(self) -> dict[str, int]:
        """Quarantine counter per reason kind (the text before the first ':')."""
        counts: dict[str, int] = {}
        for (reason,) in self.db.execute("SELECT reason FROM quarantine"):
            kind = reason.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts


class Store(StoreReads):
    def __init__(self, path: Path, window: int, lateness: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = open_sqlite(self.path)  # explicit BEGIN/COMMIT, WAL, synchronous=FULL
        self.db.executescript(SCHEMA)
        for table, column, kind in ADDED_COLUMNS:  # an older database: add what it lacks, keep every row
            if column not in {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        stored = self.db.execute("SELECT value FROM meta WHERE key='window'").fetchone()
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('window', ?)", (str(window),))
        elif int(stored[0]) != window:
            raise UserError(f"{self.path} was built with {stored[0]} s windows, not {window} s. Use the same "
                            f"--window (or rules file) as before, or a new --db.")
        self.window, self.lateness = window, lateness
        clock = self.db.execute("SELECT value FROM meta WHERE key='clock'").fetchone()
        self.clock = StreamClock(*json.loads(clock[0])) if clock else StreamClock()

    def close(self) -> None:
        self.db.close()

    def offset(self, source_key: str) -> int:
        row = self.db.execute("SELECT offset FROM offsets WHERE source_key=?", (source_key,)).fetchone()
        return int(row[0]) if row else 0

    def known_ids(self, ids: list[str]) -> set[str]:
        found = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT id FROM documents WHERE id IN ({marks})", chunk))
        return found

    def commit_batch(self, *, source_key: str, offset: int, records: list[Record],
                     quarantined: list[tuple[int, str, str]]) -> int:
        """Documents, scores, mentions, dirty and pending windows, the stream clock, quarantine rows
        and the new offset: one transaction. Returns how many records were refused and quarantined."""
        now, refused = time.time(), []
        with self._transaction():
            self.db.execute("SAVEPOINT batch")
            try:
                clock = self._insert(records, self.clock, now)
                self.db.execute("RELEASE batch")
            except _REFUSED_ROW:  # find the document(s) at fault: one savepoint each
                self.db.execute("ROLLBACK TO batch")
                self.db.execute("RELEASE batch")
                clock = self.clock
                for record in records:
                    self.db.execute("SAVEPOINT one")
                    try:
                        clock = self._insert([record], clock, now)
                    except _REFUSED_ROW as exc:
                        self.db.execute("ROLLBACK TO one")
                        refused.append((record.line_start, record.line, f"not storable: {type(exc).__name__}: {exc}"))
                    self.db.execute("RELEASE one")
            self.db.executemany("INSERT OR IGNORE INTO quarantine (source_key, offset, line, reason, created_at) "
                                "VALUES (?, ?, ?, ?, ?)",
                                [(source_key, start, printable(line, QUARANTINE_LINE_CHARS), printable(reason, 500),
                                  now) for start, line, reason in [*quarantined, *refused]])
            self.db.execute("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT(source_key) DO UPDATE SET "
                            "offset=excluded.offset, updated_at=excluded.updated_at", (source_key, offset, now))
            self._save_clock(clock)
        self.clock = clock
        return len(refused)

    def _insert(self, records: list[Record], clock: StreamClock, now: float) -> StreamClock:
        """Insert records in stream order; each is on time or late by the clock as it reaches it."""
        documents, mentions, pending = [], [], set()
        for record in records:
            on_time, clock = clock.admit(record.document["ts"], self.window, self.lateness)
            start = window_start(record.document["ts"], self.window)
            documents.append(record.document | {"ingested_at": now, "late": int(not on_time)})
            mentions += [(record.document["id"], entity, start, *record.mention(entity)) for entity in record.entities]
            if on_time:
                pending.update((entity, start) for entity in record.entities)
        self.db.executemany("INSERT OR IGNORE INTO documents (id, ts, ts_text, text, source, origin, ingested_at, "
                            "late) VALUES (:id, :ts, :ts_text, :text, :source, :origin, :ingested_at, :late)",
                            documents)
        self.db.executemany("INSERT OR IGNORE INTO scores (doc_id, p_negative, p_neutral, p_positive, score, label, "
                            "model, sentences, sentences_dropped, evidence) VALUES (:doc_id, :p_negative, :p_neutral, "
                            ":p_positive, :score, :label, :model, :sentences, :sentences_dropped, :evidence)",
                            [dict.fromkeys(SCORE_EXTRAS) | r.score for r in records])
        self.db.executemany(f"INSERT OR IGNORE INTO mentions (doc_id, entity, window_start, {', '.join(ENTITY_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * (3 + len(ENTITY_COLUMNS)))})", mentions)
        self.db.executemany("INSERT OR IGNORE INTO dirty VALUES (?, ?)", {(m[1], m[2]) for m in mentions})
        self.db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?)", sorted(pending))
        return clock

    def _save_clock(self, clock: StreamClock) -> None:
        self.db.execute("INSERT INTO meta VALUES ('clock', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (json.dumps([clock.watermark, clock.closed_until]),))

    def close_input(self) -> None:
        """End of input: every window up to the watermark's is closed (its alerts can be evaluated)."""
        clock = self.clock.flushed(self.window)
        with self._transaction():
            self._save_clock(clock)
        self.clock = clock

    # ------------------------------------------------------------ aggregation

    def dirty_from(self) -> dict[str, int]:
        """entity -> earliest dirty window start."""
        return dict(self.db.execute("SELECT entity, MIN(window_start) FROM dirty GROUP BY entity"))

    def commit_aggregates(self, updates: list[tuple[str, int, list[WindowStats]]]) -> None:
        """Replace each entity's aggregates from its `since` and clear its dirty marks, for every
        (entity, since, windows) of a refresh in ONE transaction: one commit (one fsync) per refresh
        instead of one per entity, and all of it or none of it."""
        with self._transaction():
            for entity, since, windows in updates:
                self.db.execute("DELETE FROM aggregates WHERE entity=? AND window_start>=?", (entity, since))
                self.db.executemany("INSERT INTO aggregates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                    [(w.entity, w.start, w.size, w.count, w.negative_count, w.score_sum,
                                      w.mean_score, w.negative_share, w.ewma) for w in windows])
                self.db.execute("DELETE FROM dirty WHERE entity=? AND window_start>=?", (entity, since))

    def closed_pending(self) -> list[tuple[str, int]]:
        """(entity, window start) of the closed windows whose alerts are not evaluated yet, in time order."""
        return self.db.execute("SELECT entity, window_start FROM pending WHERE window_start + ? <= ? ORDER BY "
                               "window_start, entity", (self.window, self.clock.closed_until)).fetchall()

    def commit_alerts(self, evaluated: list[tuple[str, int]], alerts: list[dict], sinks: list[str]) -> list[int]:
        """Add the alerts of the evaluated windows (one per entity/rule/window), a pending delivery per
        sink each, and clear those windows' pending marks: one transaction. Returns new alert ids."""
        new_ids = []
        with self._transaction():
            for alert in alerts:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO alerts (entity, rule, window_start, window_end, value, baseline, detail, "
                    "evidence, created_at) VALUES (:entity, :rule, :window_start, :window_end, :value, :baseline, "
                    ":detail, :evidence, :created_at)", alert | {"evidence": json.dumps(alert["evidence"]),
                                                                 "created_at": time.time()})
                if cur.rowcount:
                    new_ids.append(cur.lastrowid)
                    self.db.executemany("INSERT INTO deliveries (alert_id, sink) VALUES (?, ?)",
                                        [(cur.lastrowid, s) for s in sinks])
            self.db.executemany("DELETE FROM pending WHERE entity=? AND window_start=?", evaluated)
        return new_ids

    # ------------------------------------------------------------ alerts and deliveries

    def alert(self, alert_id: int) -> dict:
        row = self.db.execute("SELECT id, entity, rule, window_start, window_end, value, baseline, detail, evidence, "
                              "created_at FROM alerts WHERE id=?", (alert_id,)).fetchone()
        keys = ("id", "entity", "rule", "window_start", "window_end", "value", "baseline", "detail", "evidence",
                "created_at")
        out = dict(zip(keys, row))
        out["evidence"] = json.loads(out["evidence"])
        return out

    def due_deliveries(self, sink: str, now: float) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT alert_id FROM deliveries WHERE sink=? AND delivered_at IS NULL AND next_attempt_at<=? "
            "ORDER BY alert_id", (sink, now))]

    def mark_delivered(self, alert_id: int, sink: str) -> None:
        with self._transaction():
            self.db.execute("UPDATE deliveries SET delivered_at=?, attempts=attempts+1, last_error=NULL "
                            "WHERE alert_id=? AND sink=?", (time.time(), alert_id, sink))

    def mark_failed(self, alert_id: int, sink: str, error: str, retry_at: float) -> None:
        with self._transaction():
            self.db.execute("UPDATE deliveries SET attempts=attempts+1, next_attempt_at=?, last_error=? "
                            "WHERE alert_id=? AND sink=?", (retry_at, printable(error, 500), alert_id, sink))

    def defer_deliveries(self, alert_ids: list[int], sink: str, error: str, retry_at: float) -> None:
        """Postpone deliveries that were not attempted because their sink is failing (attempts unchanged)."""
        with self._transaction():
            self.db.executemany("UPDATE deliveries SET next_attempt_at=?, last_error=? WHERE alert_id=? AND sink=?",
                                [(retry_at, printable(error, 500), a, sink) for a in alert_ids])

    def _transaction(self):
        return transaction(self.db)

