"""SQLite storage: documents, scores, mentions, aggregates, alerts, deliveries, offsets, quarantine.

Crash safety rests on one rule: a batch's documents, scores, mentions, quarantined lines, the
windows it made dirty and the source offset after its last line are written in ONE transaction
(`commit_batch`). Killed before the commit, the batch is read again from the old offset; killed
after, it is never read again and its windows are still marked dirty, so aggregation catches up
on restart. Aggregates, alerts and their pending deliveries are likewise one transaction
(`commit_windows`), which also clears those dirty marks. Re-running the same input adds nothing:
documents are keyed by id, quarantined lines by (source, offset), alerts by (entity, rule, window).
WAL journal with synchronous=FULL: readers (the report) never block the monitor, and a committed
batch survives a process kill (and a power cut).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from core.errors import UserError
from solutions.finance.monitor.aggregate import WindowStats

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, ts_text TEXT NOT NULL, text TEXT NOT NULL,
    source TEXT, origin TEXT NOT NULL, ingested_at REAL NOT NULL);
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
EVIDENCE_LIMIT = 50  # document ids kept per alert


class Store:
    def __init__(self, path: Path, window: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # explicit BEGIN/COMMIT
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        stored = self.db.execute("SELECT value FROM meta WHERE key='window'").fetchone()
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('window', ?)", (str(window),))
        elif int(stored[0]) != window:
            raise UserError(f"{self.path} was built with {stored[0]} s windows, not {window} s. Use the same "
                            f"--window (or rules file) as before, or a new --db.")
        self.window = window

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

    def commit_batch(self, *, source_key: str, offset: int, documents: list[dict], scores: list[dict],
                     mentions: list[tuple[str, str, int]], quarantined: list[tuple[int, str, str]]) -> None:
        """Documents, scores, mentions, quarantine rows, dirty windows and the new offset: one transaction."""
        now = time.time()
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO documents VALUES (:id, :ts, :ts_text, :text, :source, :origin, :ingested_at)",
                [d | {"ingested_at": now} for d in documents])
            self.db.executemany(
                "INSERT OR IGNORE INTO scores VALUES (:doc_id, :p_negative, :p_neutral, :p_positive, :score, :label)",
                scores)
            self.db.executemany("INSERT OR IGNORE INTO mentions VALUES (?, ?, ?)", mentions)
            self.db.executemany("INSERT OR IGNORE INTO dirty VALUES (?, ?)", {(e, w) for _, e, w in mentions})
            self.db.executemany("INSERT OR IGNORE INTO quarantine (source_key, offset, line, reason, created_at) "
                                "VALUES (?, ?, ?, ?, ?)", [(source_key, o, line[:2000], reason, now)
                                                           for o, line, reason in quarantined])
            self.db.execute("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT(source_key) DO UPDATE SET "
                            "offset=excluded.offset, updated_at=excluded.updated_at", (source_key, offset, now))

    # ------------------------------------------------------------ aggregation

    def dirty_from(self) -> dict[str, int]:
        """entity -> earliest dirty window start."""
        return dict(self.db.execute("SELECT entity, MIN(window_start) FROM dirty GROUP BY entity"))

    def window_scores(self, entity: str, since: int) -> dict[int, tuple[list[float], list[str]]]:
        """window start -> (scores, labels) of the entity's scored documents in windows >= since."""
        out: dict[int, tuple[list[float], list[str]]] = {}
        rows = self.db.execute("SELECT m.window_start, s.score, s.label FROM mentions m JOIN scores s ON "
                               "s.doc_id = m.doc_id WHERE m.entity=? AND m.window_start>=? ORDER BY m.window_start",
                               (entity, since))
        for start, score, label in rows:
            out.setdefault(start, ([], []))
            out[start][0].append(score)
            out[start][1].append(label)
        return out

    def aggregates(self, entity: str, since: int = -2**62, until: int = 2**62) -> list[WindowStats]:
        rows = self.db.execute("SELECT window_start, window_size, count, negative_count, score_sum, ewma FROM "
                               "aggregates WHERE entity=? AND window_start>=? AND window_start<? ORDER BY "
                               "window_start", (entity, since, until))
        return [WindowStats(entity, *row) for row in rows]

    def last_ewma(self, entity: str, before: int) -> float | None:
        row = self.db.execute("SELECT ewma FROM aggregates WHERE entity=? AND window_start<? ORDER BY window_start "
                              "DESC LIMIT 1", (entity, before)).fetchone()
        return row[0] if row else None

    def evidence(self, entity: str, start: int, kind: str) -> list[str]:
        order = {"negative": "s.p_negative DESC", "lowest": "s.score ASC", "all": "d.ts ASC"}[kind]
        where = "AND s.label='negative'" if kind == "negative" else ""
        rows = self.db.execute(f"SELECT m.doc_id FROM mentions m JOIN scores s ON s.doc_id=m.doc_id JOIN documents d "
                               f"ON d.id=m.doc_id WHERE m.entity=? AND m.window_start=? {where} ORDER BY {order}, "
                               f"m.doc_id LIMIT ?", (entity, start, EVIDENCE_LIMIT))
        return [r[0] for r in rows]

    def commit_windows(self, entity: str, since: int, windows: list[WindowStats], alerts: list[dict],
                       sinks: list[str]) -> list[int]:
        """Replace the entity's aggregates from `since`, add alerts (one per entity/rule/window) with a
        pending delivery per sink, clear the dirty marks up to now: one transaction. Returns new alert ids."""
        new_ids = []
        with self._transaction():
            self.db.execute("DELETE FROM aggregates WHERE entity=? AND window_start>=?", (entity, since))
            self.db.executemany("INSERT INTO aggregates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [(w.entity, w.start, w.size, w.count, w.negative_count, w.score_sum,
                                  w.mean_score, w.negative_share, w.ewma) for w in windows])
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
            self.db.execute("DELETE FROM dirty WHERE entity=? AND window_start>=?", (entity, since))
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

    def alerts(self) -> list[dict]:
        return [self.alert(r[0]) for r in self.db.execute("SELECT id FROM alerts ORDER BY window_start, entity, rule")]

    def due_deliveries(self, sink: str, now: float) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT alert_id FROM deliveries WHERE sink=? AND delivered_at IS NULL AND next_attempt_at<=? "
            "ORDER BY alert_id", (sink, now))]

    def pending_deliveries(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE delivered_at IS NULL").fetchone()[0]

    def mark_delivered(self, alert_id: int, sink: str) -> None:
        with self._transaction():
            self.db.execute("UPDATE deliveries SET delivered_at=?, attempts=attempts+1, last_error=NULL "
                            "WHERE alert_id=? AND sink=?", (time.time(), alert_id, sink))

    def delivery_attempts(self, alert_id: int, sink: str) -> int:
        return self.db.execute("SELECT attempts FROM deliveries WHERE alert_id=? AND sink=?",
                               (alert_id, sink)).fetchone()[0]

    def mark_failed(self, alert_id: int, sink: str, error: str, retry_at: float) -> None:
        with self._transaction():
            self.db.execute("UPDATE deliveries SET attempts=attempts+1, next_attempt_at=?, last_error=? "
                            "WHERE alert_id=? AND sink=?", (retry_at, error[:500], alert_id, sink))

    # ------------------------------------------------------------ counts

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

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
