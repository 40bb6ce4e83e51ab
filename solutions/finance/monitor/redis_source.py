"""A Redis Streams source: N monitor workers in one consumer group share a stream.

    verticals finance monitor "redis://HOST:PORT/STREAM?group=monitor&consumer=w1" --db postgresql://...

Query parameters (all optional): `group` (default `monitor`; created at the stream's start, `0`,
if missing, with the stream), `consumer` (default `<hostname>-<pid>`: unique per process),
`min_idle` (ms, default 60000: a message another consumer has held unacknowledged this long is
claimed with XAUTOCLAIM; set it above the time one batch takes to score and store), `max_deliveries`
(default 10), `block` (ms an empty read waits, default 1000), `db` (Redis database number),
`password` (or `redis://:PASSWORD@HOST...`). A message is one stream entry whose field `doc`
holds the JSON document (`XADD STREAM * doc '{"id": ..., "ts": ..., "text": ...}'`).

Delivery is at-least-once: the loop calls `acknowledge(batch)` (XACK) only after the store
transaction that holds the batch has committed, so a worker killed -9 leaves its batch pending;
after `min_idle` another worker (or the restarted one) claims it and stores it again, and the
store's document ids make the second time a no-op. A message that cannot be a document (no `doc`
field, bytes that are not UTF-8, over `max_line_bytes`, bad JSON: the loop's parser) comes out
as a `Line` with a `problem`, so it is quarantined with its reason and acknowledged like any
other; a message delivered more than `max_deliveries` times (it killed every worker that took it)
is quarantined the same way without being parsed, so nothing is retried forever. Connection
errors (a broker restart) are retried with backoff for up to `reconnect_seconds` (60 s).

Positions: a message's `Line.start` is its stream id as one integer, `ms * 2**20 + seq` (ids with a
seq over 2**20 - 1, which only explicit XADD ids can have, are quarantined: they would not be
unique). The last line of a batch carries in `end` the stream's committed frontier: every
message below it is stored once this batch commits (it was acknowledged earlier, or it is in this
batch). The shared PostgreSQL store advances the stream clock only over that complete prefix,
in stream order, so which documents are late, and so the alerts, are the same as one worker's.
Without `follow` a worker drains the stream: it returns when every message of the stream has
been acknowledged by the group (it waits for messages other workers hold, and claims those whose
worker died), so the caller's "input complete" holds for the whole group, not just this worker.
Hand-written on the `redis` client: there is no consumer-group runner in the client, and the
ack-after-commit, claim and frontier logic is this monitor's own contract.
Leaves out: several streams in one URL (give several inputs), stream trimming (the producer's
XADD MAXLEN; a trimmed message that was never delivered is lost to every consumer).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from core.foundation.errors import UserError
from solutions.finance.monitor.lines import MAX_LINE_BYTES, QUARANTINE_HEAD_BYTES, Line, printable

SEQ_BITS = 20
FIELD = b"doc"
_OPTIONS = {"group", "consumer", "min_idle", "max_deliveries", "block", "db", "password"}


def parse_stream_id(stream_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = (stream_id.decode() if isinstance(stream_id, bytes) else stream_id).partition("-")
    return int(ms), int(seq or 0)


def position(stream_id: bytes | str) -> int:
    """A stream id as one integer that sorts like the ids (seq clipped to SEQ_BITS; see the module doc)."""
    ms, seq = parse_stream_id(stream_id)
    return (ms << SEQ_BITS) | min(seq, (1 << SEQ_BITS) - 1)


def message_line(key: str, stream_id: bytes, fields: dict | None, deliveries: int, *, max_deliveries: int,
                 max_line_bytes: int) -> Line:
    """The `Line` of one stream entry; anything that cannot be read as a document gets a `problem`."""
    start = position(stream_id)
    fields = fields or {}
    value = fields.get(FIELD)
    head = printable(repr(fields)[:QUARANTINE_HEAD_BYTES], QUARANTINE_HEAD_BYTES)
    if deliveries > max_deliveries:
        problem = (f"delivered {deliveries} times without being acknowledged (over max_deliveries="
                   f"{max_deliveries}): every worker that took it died")
        return Line(key, start, start + 1, head if value is None else _head(value), problem)
    if parse_stream_id(stream_id)[1] >= 1 << SEQ_BITS:
        return Line(key, start, start + 1, head, f"bad message id {stream_id!r}: sequence over 2^{SEQ_BITS}-1 "
                                                 f"(use auto-generated ids, XADD STREAM * ...)")
    if value is None:
        names = sorted(printable(k.decode("utf-8", "backslashreplace"), 64) for k in fields)[:10]
        return Line(key, start, start + 1, head, f"bad message: no 'doc' field (fields: {names})")
    if len(value) > max_line_bytes:
        return Line(key, start, start + 1, _head(value), f"line over {max_line_bytes} bytes ({len(value)} bytes)")
    try:
        return Line(key, start, start + 1, value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Line(key, start, start + 1, _head(value),
                    f"bad encoding: byte 0x{value[exc.start]:02x} at {exc.start} is not UTF-8")


def _head(value: bytes) -> str:
    return value[:QUARANTINE_HEAD_BYTES].decode("utf-8", "backslashreplace")


class RedisStreamSource:
    """One stream, read through one consumer group (see the module doc)."""

    def __init__(self, url: str, follow: bool = False, max_line_bytes: int = MAX_LINE_BYTES,
                 reconnect_seconds: float = 60.0):
        import redis  # lazy: an optional extra ([scale])

        parts = urlsplit(url)
        stream = unquote(parts.path.lstrip("/"))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme != "redis" or not stream or "/" in stream:
            raise UserError(f"bad Redis source {url!r}: use redis://HOST:PORT/STREAM?group=G&consumer=C")
        unknown = set(query) - _OPTIONS
        if unknown:
            raise UserError(f"unknown Redis source option(s) {sorted(unknown)} in {url!r}; valid: {sorted(_OPTIONS)}")
        try:
            self.min_idle = int(query.get("min_idle", 60000))
            self.max_deliveries = int(query.get("max_deliveries", 10))
            self.block = int(query.get("block", 1000))
            db, port = int(query.get("db", 0)), parts.port or 6379
        except ValueError as exc:
            raise UserError(f"bad Redis source {url!r}: {exc}") from None
        self.stream, self.group = stream.encode(), query.get("group", "monitor")
        self.consumer = query.get("consumer") or f"{socket.gethostname()}-{os.getpid()}"
        self.follow, self.max_line_bytes, self.reconnect_seconds = follow, max_line_bytes, reconnect_seconds
        self.key = printable(f"redis://{parts.hostname or 'localhost'}:{port}/{db}/{stream}#{self.group}", 4096)
        self.redis = redis.Redis(host=parts.hostname or "localhost", port=port, db=db,
                                 password=query.get("password") or (unquote(parts.password) if parts.password else None),
                                 socket_timeout=max(10.0, self.block / 1000 + 5), socket_connect_timeout=5)
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._ids: list[bytes] = []  # the stream ids of the batch in hand
        self._call(self._create_group)

    def _create_group(self) -> None:
        import redis  # lazy: an optional extra ([scale])

        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _call(self, fn, *args, **kwargs):
        """`fn(*args)`, retried with backoff while the broker is unreachable (restarting, loading)."""
        deadline, delay = time.monotonic() + self.reconnect_seconds, 0.1
        while True:
            try:
                return fn(*args, **kwargs)
            except self._errors as exc:
                if time.monotonic() > deadline:
                    raise UserError(f"Redis at {self.key} unreachable for {self.reconnect_seconds:.0f} s: {exc}") from exc
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    # ------------------------------------------------------------ reading

    def batches(self, offsets, batch_size: int) -> Iterator[list[Line]]:
        """Claimed messages of dead workers first, then new ones; `offsets` is unused (the group
        keeps the position). Returns when nothing is left (see the module doc for `follow`)."""
        while True:
            entries = self._call(self._claim, batch_size) or self._call(self._read_new, batch_size)
            if entries:
                yield self._lines(entries)
                continue
            if self.follow or self._call(self._drained):
                return
            time.sleep(min(1.0, max(0.05, self.min_idle / 4000)))  # others hold messages: wait to see them acked or claim them

    def _claim(self, count: int) -> list[tuple[bytes, dict | None, int]]:
        """XAUTOCLAIM up to `count` messages idle over `min_idle`, with how often each was delivered."""
        _cursor, claimed, *_deleted = self.redis.xautoclaim(self.stream, self.group, self.consumer, self.min_idle,
                                                             start_id="0-0", count=count)
        claimed = [(mid, fields) for mid, fields in claimed if mid is not None]
        if not claimed:
            return []
        pending = self.redis.xpending_range(self.stream, self.group, min=claimed[0][0], max=claimed[-1][0],
                                            count=len(claimed) * 2 + 10, consumername=self.consumer)
        times = {p["message_id"]: p["times_delivered"] for p in pending}
        return [(mid, fields, times.get(mid, 1)) for mid, fields in claimed]

    def _read_new(self, count: int) -> list[tuple[bytes, dict | None, int]]:
        got = self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=self.block)
        return [(mid, fields, 1) for _stream, entries in got or [] for mid, fields in entries]

    def _frontier(self, ids: set[bytes]) -> int:
        """The position below which every message is stored once the batch `ids` commits: the first
        pending message not in it, or just past the last one delivered to the group (read atomically)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.xpending_range(self.stream, self.group, min="-", max="+", count=len(ids) + 1)
        pipe.xinfo_groups(self.stream)
        pending, groups = pipe.execute()
        delivered = next(g["last-delivered-id"] for g in groups if g["name"].decode() == self.group)
        frontier = position(delivered) + 1
        for entry in pending:
            if entry["message_id"] not in ids:
                return min(frontier, position(entry["message_id"]))
        return frontier

    def _drained(self) -> bool:
        """True when the group has acknowledged every message of the stream."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.xpending(self.stream, self.group)
        pipe.xinfo_groups(self.stream)
        pipe.xinfo_stream(self.stream)
        summary, groups, info = pipe.execute()
        delivered = next(g["last-delivered-id"] for g in groups if g["name"].decode() == self.group)
        return summary["pending"] == 0 and parse_stream_id(delivered) >= parse_stream_id(info["last-generated-id"])

    def _lines(self, entries: list[tuple[bytes, dict | None, int]]) -> list[Line]:
        entries = sorted(entries, key=lambda e: parse_stream_id(e[0]))
        lines = [message_line(self.key, mid, fields, times, max_deliveries=self.max_deliveries,
                              max_line_bytes=self.max_line_bytes) for mid, fields, times in entries]
        self._ids = [mid for mid, _, _ in entries]
        frontier = self._call(self._frontier, set(self._ids))
        last = lines[-1]
        lines[-1] = Line(last.source_key, last.start, frontier, last.raw, last.problem)
        return lines

    # ------------------------------------------------------------ acknowledging

    def acknowledge(self, lines: list[Line]) -> None:
        """XACK the batch just committed (the loop calls this after the store's transaction)."""
        starts = {line.start for line in lines}
        ids = [mid for mid in self._ids if position(mid) in starts]
        if ids:
            self._call(self.redis.xack, self.stream, self.group, *ids)

    def close(self) -> None:
        self.redis.close()
