"""PostgreSQL storage for several monitor workers at once: `--db postgresql://USER@HOST:PORT/DB`.

The same tables and public methods as the SQLite `store.Store` (the loop, the sinks and the
tests call either), with the same guarantees: a batch's documents, scores, mentions, dirty marks,
quarantined lines, offset and stream clock are ONE transaction (`commit_batch`); aggregates and
their dirty marks one (`commit_windows`); alerts, their pending deliveries (the sink outbox) and
their pending marks one (`commit_alerts`). Commits are durable (synchronous_commit on, the
server's default), so the Redis source acknowledges a batch only after it is on disk.

Several workers writing at once, and how nothing is counted twice. Upserts, not row locks, for
everything keyed by identity: documents by id, scores by doc id, mentions by (doc, entity),
quarantine by (source, position), alerts by (entity, rule, window), all `INSERT ... ON CONFLICT`:
a document delivered twice (a claimed message whose first worker did commit) or an alert two
workers evaluate is stored once whoever commits first, without a lock held across the scoring
or a read-then-write race. Row locks only where a value is derived from other rows:
- the stream clock (`meta` row 'clock', `SELECT ... FOR UPDATE` first thing in every batch):
  batch commits are serialised on it (the scoring before them runs in parallel). It advances only
  over the complete prefix of each source (`frontiers`: every message below it is stored, see
  redis_source.py), in stream position order, so which documents are late, which windows are
  pending and so every alert are what one worker reading the stream in order decides. A stored
  document beyond the frontier is undecided (`late` NULL) until the prefix reaches it; alert
  rules and evidence read only decided on-time documents, aggregates read all.
- a per-entity version (`entity_versions`, bumped by every batch that touches the entity, before
  its dirty marks): `dirty_from` reads it with the marks; `commit_windows` locks it (`FOR UPDATE`)
  and writes the windows only if it is unchanged, i.e. no batch committed for that entity since
  its windows were read, so a slow worker never overwrites newer aggregates with older ones nor
  clears a mark whose documents it did not see; otherwise it writes nothing and the marks stay
  for the next refresh. (An upsert cannot do this: a window depends on all its documents.)
A document id seen twice in one stream keeps the copy at the lower stream position, as one
in-order worker would: a later copy stored first is replaced while it is still undecided, so
`known_ids` reports only decided ids (an undecided one is scored again; the cost of a rare
redelivery). Deliveries are claimed with a lease (`UPDATE ... FOR UPDATE SKIP LOCKED`), so two
workers do not send the same alert at the same moment; delivery stays at-least-once.
Deadlocks and serialization failures (the server aborts one transaction) are retried.
Schema changes are additive columns (store.py's ADDED_COLUMNS: the per-company scores and evidence),
added on start under the schema lock, only where missing (an ALTER locks the table exclusively even
when it changes nothing): an older database keeps every row.
Leaves out: `verticals finance report` (it reads SQLite), other schema migrations, connection pooling
(one connection per worker).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from core.foundation.errors import UserError
from core.foundation.postgres import retried
from solutions.finance.monitor.aggregate import StreamClock, WindowStats, window_start
from solutions.finance.monitor.lines import printable
from solutions.finance.monitor.store import (
    ADDED_COLUMNS,
    ENTITY_COLUMNS,
    QUARANTINE_LINE_CHARS,
    SCORE_EXTRAS,
    Record,
    StoreReads,
)

_PG_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT"}
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS documents (
        id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, ts_text TEXT NOT NULL, text TEXT NOT NULL, source TEXT,
        origin TEXT NOT NULL, position BIGINT NOT NULL, ingested_at DOUBLE PRECISION NOT NULL, late SMALLINT)""",
    "CREATE INDEX IF NOT EXISTS documents_undecided ON documents (origin, position) WHERE late IS NULL",
    """CREATE TABLE IF NOT EXISTS scores (
        doc_id TEXT PRIMARY KEY REFERENCES documents(id), p_negative DOUBLE PRECISION NOT NULL,
        p_neutral DOUBLE PRECISION NOT NULL, p_positive DOUBLE PRECISION NOT NULL, score DOUBLE PRECISION NOT NULL,
        label TEXT NOT NULL, model TEXT)""",
    """CREATE TABLE IF NOT EXISTS mentions (
        doc_id TEXT NOT NULL REFERENCES documents(id), entity TEXT NOT NULL, window_start BIGINT NOT NULL,
        PRIMARY KEY (doc_id, entity))""",
    "CREATE INDEX IF NOT EXISTS mentions_by_window ON mentions (entity, window_start)",
    """CREATE TABLE IF NOT EXISTS aggregates (
        entity TEXT NOT NULL, window_start BIGINT NOT NULL, window_size BIGINT NOT NULL, count BIGINT NOT NULL,
        negative_count BIGINT NOT NULL, score_sum DOUBLE PRECISION NOT NULL, mean_score DOUBLE PRECISION NOT NULL,
        negative_share DOUBLE PRECISION NOT NULL, ewma DOUBLE PRECISION NOT NULL, PRIMARY KEY (entity, window_start))""",
    "CREATE TABLE IF NOT EXISTS dirty (entity TEXT NOT NULL, window_start BIGINT NOT NULL, PRIMARY KEY (entity, window_start))",
    "CREATE TABLE IF NOT EXISTS pending (entity TEXT NOT NULL, window_start BIGINT NOT NULL, PRIMARY KEY (entity, window_start))",
    "CREATE TABLE IF NOT EXISTS entity_versions (entity TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS alerts (
        id BIGSERIAL PRIMARY KEY, entity TEXT NOT NULL, rule TEXT NOT NULL, window_start BIGINT NOT NULL,
        window_end BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, baseline DOUBLE PRECISION NOT NULL,
        detail TEXT NOT NULL, evidence TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (entity, rule, window_start))""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        alert_id BIGINT NOT NULL REFERENCES alerts(id), sink TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0, delivered_at DOUBLE PRECISION, last_error TEXT,
        PRIMARY KEY (alert_id, sink))""",
    """CREATE TABLE IF NOT EXISTS offsets (source_key TEXT PRIMARY KEY, "offset" BIGINT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS frontiers (source_key TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS quarantine (
        id BIGSERIAL PRIMARY KEY, source_key TEXT NOT NULL, "offset" BIGINT NOT NULL, line TEXT NOT NULL,
        reason TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, UNIQUE (source_key, "offset"))""",
]
# Added since the first schema: store.py's ADDED_COLUMNS (documents.late and scores.model are in the CREATE
# statements above already). ADD COLUMN keeps every row; NULL = not recorded then. Run only for a column that is
# missing: ALTER TABLE takes an exclusive lock even when it changes nothing, and would deadlock against another
# worker's (or this process's delivery connection's) reads.
SCHEMA_LOCK = 7_301_517  # pg_advisory_xact_lock key: two workers starting at once create the tables once
END = 2**63 - 1  # the frontier of a source whose input is complete
DELIVERY_LEASE_SECONDS = 60.0  # a claimed delivery is not offered to another worker for this long


def _refused_row_errors():
    import psycopg  # lazy: an optional extra ([scale])

    # A value the database refuses (NUL in text, out of range), not the database failing.
    return (psycopg.DataError, psycopg.IntegrityError, ValueError, OverflowError, TypeError)


def _storable(text: str, limit: int) -> str:
    """`printable`, and no NUL character (PostgreSQL text cannot hold one)."""
    return printable(text, limit).replace("\x00", "\\x00")


@dataclass
class _Batch:
    """The rows of one batch, by column, for `unnest` (one round trip per table)."""

    records: list[Record]

    def column(self, key: str, part: str = "document"):
        return [getattr(r, part)[key] if part == "document" else r.score.get(key) for r in self.records]


class PostgresStore(StoreReads):
    def __init__(self, dsn: str, window: int, lateness: int = 0):
        import psycopg  # lazy: an optional extra ([scale])

        self.dsn = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", dsn)  # for messages: no password
        try:
            self.db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise UserError(f"cannot connect to PostgreSQL at {self.dsn}: {exc}".strip()) from None
        self._refused = _refused_row_errors()
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in SCHEMA:
                self.db.execute(statement)
            present = set(self.db.execute("SELECT table_name, column_name FROM information_schema.columns "
                                          "WHERE table_schema = current_schema()").fetchall())
            for table, column, kind in ADDED_COLUMNS:
                if (table, column) not in present:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_PG_TYPES[kind]}")
            self.db.execute("INSERT INTO meta VALUES ('window', %s) ON CONFLICT (key) DO NOTHING", (str(window),))
            stored = self.db.execute("SELECT value FROM meta WHERE key='window'").fetchone()[0]
        if int(stored) != window:
            raise UserError(f"{self.dsn} was built with {stored} s windows, not {window} s. Use the same --window "
                            f"(or rules file) as before, or another database.")
        self.window, self.lateness = window, lateness
        self._versions: dict[str, int] = {}  # entity -> version when its dirty marks were read

    def close(self) -> None:
        self.db.close()

    @property
    def clock(self) -> StreamClock:
        return self._read_clock(lock=False)

    def _read_clock(self, lock: bool) -> StreamClock:
        row = self.db.execute("SELECT value FROM meta WHERE key='clock'" + (" FOR UPDATE" if lock else "")).fetchone()
        return StreamClock(*json.loads(row[0])) if row else StreamClock()

    def _save_clock(self, clock: StreamClock) -> None:
        self.db.execute("INSERT INTO meta VALUES ('clock', %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        (json.dumps([clock.watermark, clock.closed_until]),))

    def offset(self, source_key: str) -> int:
        row = self.db.execute('SELECT "offset" FROM offsets WHERE source_key=%s', (source_key,)).fetchone()
        return int(row[0]) if row else 0

    def known_ids(self, ids: list[str]) -> set[str]:
        """Ids stored and decided (see the module doc: an undecided copy may still be replaced)."""
        rows = self.db.execute("SELECT id FROM documents WHERE id = ANY(%s) AND late IS NOT NULL", (ids,))
        return {r[0] for r in rows}

    # ------------------------------------------------------------ one batch

    @retried
    def commit_batch(self, *, source_key: str, offset: int, records: list[Record],
                     quarantined: list[tuple[int, str, str]]) -> int:
        """Documents, scores, mentions, dirty marks, quarantine rows, the offset, the source's frontier
        and the stream clock: one transaction. Returns how many records were refused and quarantined."""
        now, refused = time.time(), []
        records = sorted(records, key=lambda r: r.document["id"])  # one lock order for every worker
        with self.db.transaction():
            self._read_clock(lock=True)  # serialise batch commits here, before any other lock is taken
            try:
                with self.db.transaction():  # a savepoint
                    self._insert(records, now)
            except self._refused:  # find the document(s) at fault: one savepoint each
                for record in records:
                    try:
                        with self.db.transaction():
                            self._insert([record], now)
                    except self._refused as exc:
                        refused.append((record.line_start, record.line, f"not storable: {type(exc).__name__}: {exc}"))
            rows = [(source_key, start, _storable(line, QUARANTINE_LINE_CHARS), _storable(reason, 500), now)
                    for start, line, reason in [*quarantined, *refused]]
            with self.db.cursor() as cur:
                cur.executemany('INSERT INTO quarantine (source_key, "offset", line, reason, created_at) VALUES '
                                '(%s, %s, %s, %s, %s) ON CONFLICT (source_key, "offset") DO NOTHING', rows)
            self.db.execute('INSERT INTO offsets VALUES (%s, %s, %s) ON CONFLICT (source_key) DO UPDATE SET '
                            '"offset"=excluded."offset", updated_at=excluded.updated_at', (source_key, offset, now))
            self._advance(source_key, offset)
        return len(refused)

    def _insert(self, records: list[Record], now: float) -> None:
        if not records:
            return
        b = _Batch(records)
        stored = self.db.execute(
            "INSERT INTO documents (id, ts, ts_text, text, source, origin, position, ingested_at) "
            "SELECT * FROM unnest(%s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::bigint[], %s::float8[]) ON CONFLICT (id) DO UPDATE SET ts=excluded.ts, ts_text=excluded.ts_text, "
            "text=excluded.text, source=excluded.source, position=excluded.position, ingested_at=excluded.ingested_at "
            "WHERE documents.late IS NULL AND documents.origin=excluded.origin AND excluded.position<documents.position "
            "RETURNING id, xmax <> 0",
            (b.column("id"), b.column("ts"), b.column("ts_text"), b.column("text"), b.column("source"),
             b.column("origin"), [r.line_start for r in records], [now] * len(records))).fetchall()
        if not stored:
            return
        replaced = [doc_id for doc_id, was_there in stored if was_there]
        stored_ids = {doc_id for doc_id, _ in stored}
        keep = [r for r in records if r.document["id"] in stored_ids]
        touched = set(self.db.execute("DELETE FROM mentions WHERE doc_id = ANY(%s) RETURNING entity, window_start",
                                      (replaced,)).fetchall()) if replaced else set()
        mentions = sorted(((r.document["id"], e, window_start(r.document["ts"], self.window), *r.mention(e))
                           for r in keep for e in r.entities), key=lambda m: m[:2])
        touched |= {(m[1], m[2]) for m in mentions}
        entities = sorted({e for e, _ in touched})
        self.db.execute("INSERT INTO entity_versions SELECT unnest(%s::text[]), 1 ON CONFLICT (entity) DO UPDATE "
                        "SET version = entity_versions.version + 1", (entities,))  # before the dirty marks
        b = _Batch(keep)
        columns = ("doc_id", "p_negative", "p_neutral", "p_positive", "score", "label", *SCORE_EXTRAS)
        self.db.execute(
            f"INSERT INTO scores ({', '.join(columns)}) SELECT * FROM unnest(%s::text[], %s::float8[], %s::float8[], "
            f"%s::float8[], %s::float8[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[]) "
            f"ON CONFLICT (doc_id) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in columns[1:]),
            tuple(b.column(k, "score") for k in columns))
        arrays = tuple(map(list, zip(*mentions))) if mentions else ([],) * (3 + len(ENTITY_COLUMNS))
        self.db.execute(f"INSERT INTO mentions (doc_id, entity, window_start, {', '.join(ENTITY_COLUMNS)}) SELECT * "
                        f"FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::float8[], %s::float8[], %s::float8[], "
                        f"%s::float8[], %s::text[], %s::bigint[], %s::text[]) ON CONFLICT DO NOTHING", arrays)
        dirty = sorted(touched)
        self.db.execute("INSERT INTO dirty SELECT * FROM unnest(%s::text[], %s::bigint[]) ON CONFLICT DO NOTHING",
                        ([e for e, _ in dirty], [w for _, w in dirty]))

    def _advance(self, source_key: str, frontier: int) -> None:
        """Move the source's frontier up to `frontier` and run the stream clock over its undecided
        documents below it, in position order: each is on time or late as the clock reaches it, and the
        windows of the on-time ones become pending. Call inside a transaction holding the clock row."""
        frontier = self.db.execute(
            "INSERT INTO frontiers VALUES (%s, %s) ON CONFLICT (source_key) DO UPDATE SET "
            "position = GREATEST(frontiers.position, excluded.position) RETURNING position",
            (source_key, frontier)).fetchone()[0]
        rows = self.db.execute(
            "SELECT d.id, d.ts, array_remove(array_agg(m.entity ORDER BY m.entity), NULL) FROM documents d "
            "LEFT JOIN mentions m ON m.doc_id = d.id WHERE d.origin=%s AND d.late IS NULL AND d.position < %s "
            "GROUP BY d.id ORDER BY d.position, d.id", (source_key, frontier)).fetchall()
        if not rows:
            return
        clock, late, pending = self._read_clock(lock=False), [], set()
        for doc_id, ts, entities in rows:
            on_time, clock = clock.admit(ts, self.window, self.lateness)
            late.append(0 if on_time else 1)
            if on_time:
                pending.update((e, window_start(ts, self.window)) for e in entities)
        self.db.execute("UPDATE documents SET late = u.late FROM unnest(%s::text[], %s::smallint[]) AS u(id, late) "
                        "WHERE documents.id = u.id", ([r[0] for r in rows], late))
        pending = sorted(pending)
        self.db.execute("INSERT INTO pending SELECT * FROM unnest(%s::text[], %s::bigint[]) ON CONFLICT DO NOTHING",
                        ([e for e, _ in pending], [w for _, w in pending]))
        self._save_clock(clock)

    @retried
    def close_input(self) -> None:
        """End of input (for a stream: the whole group has acknowledged it): every source's prefix is
        complete, so the clock runs over what is undecided; then every window up to the watermark's closes."""
        with self.db.transaction():
            self._read_clock(lock=True)
            origins = [r[0] for r in self.db.execute("SELECT DISTINCT origin FROM documents WHERE late IS NULL "
                                                     "ORDER BY origin")]
            for origin in origins:
                self._advance(origin, END)
            self._save_clock(self._read_clock(lock=False).flushed(self.window))

    # ------------------------------------------------------------ aggregation

    def dirty_from(self) -> dict[str, int]:
        """entity -> earliest dirty window start (and, kept for `commit_windows`, the entity's version)."""
        rows = self.db.execute("SELECT d.entity, MIN(d.window_start), COALESCE(MAX(v.version), 0) FROM dirty d LEFT "
                               "JOIN entity_versions v ON v.entity = d.entity GROUP BY d.entity").fetchall()
        self._versions = {entity: version for entity, _, version in rows}
        return {entity: since for entity, since, _ in rows}

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s")  # psycopg's placeholders (StoreReads writes SQLite's)

    def commit_aggregates(self, updates: list[tuple[str, int, list[WindowStats]]]) -> None:
        """`commit_windows` per entity, each its own transaction: each is checked against its own entity's
        version, so one entity that another worker touched meanwhile does not hold back the others."""
        for entity, since, windows in updates:
            self.commit_windows(entity, since, windows)

    @retried
    def commit_windows(self, entity: str, since: int, windows: list[WindowStats]) -> None:
        """Replace the entity's aggregates from `since` and clear its dirty marks: one transaction, and
        only if no batch touched the entity since `dirty_from` (see the module doc)."""
        with self.db.transaction():
            row = self.db.execute("SELECT version FROM entity_versions WHERE entity=%s FOR UPDATE", (entity,)).fetchone()
            version = row[0] if row else 0
            if self._versions.get(entity, version) != version:
                return  # newer documents arrived: the marks stay and the next refresh reads them
            self.db.execute("DELETE FROM aggregates WHERE entity=%s AND window_start>=%s", (entity, since))
            with self.db.cursor() as cur:
                cur.executemany("INSERT INTO aggregates VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                [(w.entity, w.start, w.size, w.count, w.negative_count, w.score_sum,
                                  w.mean_score, w.negative_share, w.ewma) for w in windows])
            self.db.execute("DELETE FROM dirty WHERE entity=%s AND window_start>=%s", (entity, since))

    def closed_pending(self) -> list[tuple[str, int]]:
        return self.db.execute("SELECT entity, window_start FROM pending WHERE window_start + %s <= %s ORDER BY "
                               "window_start, entity", (self.window, self.clock.closed_until)).fetchall()

    @retried
    def commit_alerts(self, evaluated: list[tuple[str, int]], alerts: list[dict], sinks: list[str]) -> list[int]:
        """Alerts (one per entity/rule/window, whichever worker evaluated it first), a pending delivery
        per sink each, and those windows' pending marks cleared: one transaction. Returns new alert ids."""
        new_ids = []
        with self.db.transaction():
            for alert in alerts:
                row = self.db.execute(
                    "INSERT INTO alerts (entity, rule, window_start, window_end, value, baseline, detail, evidence, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (entity, rule, window_start) "
                    "DO NOTHING RETURNING id",
                    (alert["entity"], alert["rule"], alert["window_start"], alert["window_end"], alert["value"],
                     alert["baseline"], _storable(alert["detail"], 2000), json.dumps(alert["evidence"]),
                     time.time())).fetchone()
                if row:
                    new_ids.append(row[0])
                    with self.db.cursor() as cur:
                        cur.executemany("INSERT INTO deliveries (alert_id, sink) VALUES (%s, %s)",
                                        [(row[0], s) for s in sinks])
            done = sorted(evaluated)
            self.db.execute("DELETE FROM pending p USING unnest(%s::text[], %s::bigint[]) AS u(entity, window_start) "
                            "WHERE p.entity=u.entity AND p.window_start=u.window_start",
                            ([e for e, _ in done], [w for _, w in done]))
        return new_ids

    # ------------------------------------------------------------ alerts and deliveries

    def alert(self, alert_id: int) -> dict:
        keys = ("id", "entity", "rule", "window_start", "window_end", "value", "baseline", "detail", "evidence",
                "created_at")
        row = self.db.execute(f"SELECT {', '.join(keys)} FROM alerts WHERE id=%s", (alert_id,)).fetchone()
        out = dict(zip(keys, row))
        out["evidence"] = json.loads(out["evidence"])
        return out

    def due_deliveries(self, sink: str, now: float) -> list[int]:
        """Due deliveries of `sink`, claimed for DELIVERY_LEASE_SECONDS so another worker skips them."""
        rows = self.db.execute(
            "UPDATE deliveries SET next_attempt_at=%s WHERE (alert_id, sink) IN (SELECT alert_id, sink FROM deliveries "
            "WHERE sink=%s AND delivered_at IS NULL AND next_attempt_at<=%s ORDER BY alert_id FOR UPDATE SKIP LOCKED) "
            "RETURNING alert_id", (now + DELIVERY_LEASE_SECONDS, sink, now)).fetchall()
        return sorted(r[0] for r in rows)

    def mark_delivered(self, alert_id: int, sink: str) -> None:
        self.db.execute("UPDATE deliveries SET delivered_at=%s, attempts=attempts+1, last_error=NULL "
                        "WHERE alert_id=%s AND sink=%s", (time.time(), alert_id, sink))

    def mark_failed(self, alert_id: int, sink: str, error: str, retry_at: float) -> None:
        self.db.execute("UPDATE deliveries SET attempts=attempts+1, next_attempt_at=%s, last_error=%s "
                        "WHERE alert_id=%s AND sink=%s", (retry_at, _storable(error, 500), alert_id, sink))

    def defer_deliveries(self, alert_ids: list[int], sink: str, error: str, retry_at: float) -> None:
        self.db.execute("UPDATE deliveries SET next_attempt_at=%s, last_error=%s WHERE alert_id = ANY(%s) AND sink=%s",
                        (retry_at, _storable(error, 500), list(alert_ids), sink))

