"""The monitor on a real broker and a shared database: Redis Streams (consumer group) + PostgreSQL.

Servers are started here (tests/servers.py) and the tests skip with the reason when the
binaries are missing. Workers are real processes (`python -m tests.finance.test_scaleout`, the
keyword stub model with a per-batch delay standing in for scoring time) killed with SIGKILL.
The reference is one worker on the SQLite store reading the same lines from a file, in order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.finance.conftest import KeywordModel, demo_stream_dir

redis = pytest.importorskip("redis", reason="the `redis` client is not installed (pip install -e '.[scale]')")
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[scale]')")

from solutions.finance.monitor.loop import MonitorConfig, run_monitor  # noqa: E402
from solutions.finance.monitor.redis_source import message_line, position  # noqa: E402
from solutions.finance.monitor.store import Record  # noqa: E402
from solutions.finance.monitor.store_postgres import PostgresStore  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

STREAM = "news"


class SlowKeywordModel(KeywordModel):
    """The keyword stub, taking `delay` seconds per call like a real encoder would per batch."""

    def __init__(self, delay: float):
        self.delay = delay

    def predict_proba(self, texts, batch_size=64):
        time.sleep(self.delay)
        return super().predict_proba(texts, batch_size)


def _config(inputs, db, sink: Path, **kw) -> MonitorConfig:
    return MonitorConfig(inputs=tuple(inputs), db=db, model="unused", watchlist=demo_stream_dir() / "watchlist.yaml",
                         sinks=(f"jsonl:{sink}",), drain_seconds=0, batch_size=4, poll_seconds=0.05, **kw)


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def redis_server():
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def pg_dsn(postgres, request):  # postgres: the session's real server (tests/conftest.py)
    return postgres.create_database(request.node.name[:40].lower().replace("[", "_").replace("]", ""))


@pytest.fixture
def stream_name(redis_server, request):
    name = f"{STREAM}-{request.node.name}"
    redis_server.client().delete(name)
    return name


# ------------------------------------------------------------------ the input


def _messages() -> tuple[list[str], int]:
    """The demo stream with, spread through it: documents dated 6 h before their neighbours (late
    for an in-order reader), later copies of earlier ids with other text and time (the first copy
    counts), and malformed lines. Returns (lines, how many are malformed)."""
    demo = (demo_stream_dir() / "stream.jsonl").read_text().splitlines()
    lines, malformed = [], 0
    for i, line in enumerate(demo):
        lines.append(line)
        doc = json.loads(line)
        if i % 25 == 24:
            lines.append(json.dumps({**doc, "id": f"late{i}", "ts": _shift(doc["ts"], -6)}))
        if i % 29 == 28:
            lines.append(json.dumps({**json.loads(demo[i - 20]), "ts": _shift(doc["ts"], 1), "text": "Acme Corp falls"}))
        if i % 41 == 40:
            lines.append('{"id": "broken", "ts": ')
            malformed += 1
    return lines, malformed


def _shift(ts: str, hours: int) -> str:
    from datetime import datetime, timedelta

    stamp = datetime.fromisoformat(ts.replace("Z", "+00:00")) + timedelta(hours=hours)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _publish(server: RedisServer, stream: str, lines: list[str]) -> None:
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(stream, {"doc": line})
    pipe.execute()


def _reference(tmp_path, lines) -> dict:
    """One worker, SQLite store, the same lines from a file in order."""
    path = tmp_path / "reference.jsonl"
    path.write_text("\n".join(lines) + "\n")
    run_monitor(_config([path], tmp_path / "reference.db", tmp_path / "reference-alerts.jsonl"), model=KeywordModel())
    return _results(sqlite3.connect(tmp_path / "reference.db"))


def _results(conn) -> dict:
    """What must not depend on how many workers there were (ids, not row numbers or times)."""
    query = lambda sql: [tuple(round(v, 9) if isinstance(v, float) else v for v in row)  # noqa: E731
                         for row in conn.execute(sql).fetchall()]
    return {"documents": query("SELECT id, ts, text, late FROM documents ORDER BY id"),
            "scores": query("SELECT doc_id, score, label, sentences, sentences_dropped, evidence FROM scores "
                            "ORDER BY doc_id"),
            "mentions": query("SELECT doc_id, entity, window_start, score, label, sentences, evidence FROM mentions "
                              "ORDER BY doc_id, entity"),
            "aggregates": query("SELECT entity, window_start, count, negative_count, score_sum, mean_score, "
                                "negative_share, ewma FROM aggregates ORDER BY entity, window_start"),
            "alerts": query("SELECT entity, rule, window_start, window_end, value, baseline, detail, evidence "
                            "FROM alerts ORDER BY window_start, entity, rule"),
            "quarantine": len(query("SELECT reason FROM quarantine")),
            "dirty": query("SELECT COUNT(*) FROM dirty"), "pending": query("SELECT COUNT(*) FROM pending")}


def _pg_results(dsn) -> dict:
    with psycopg.connect(dsn) as conn:
        return _results(conn)


def _pg_count(dsn, sql="SELECT COUNT(*) FROM documents") -> int:
    try:
        with psycopg.connect(dsn) as conn:
            return conn.execute(sql).fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return 0


# ------------------------------------------------------------------ worker processes


def _start_worker(source: str, dsn: str, sink: Path, *, follow: bool = False, delay: float = 0.02):
    cmd = [sys.executable, "-m", "tests.finance.test_scaleout", source, dsn, str(sink), str(delay)]
    return subprocess.Popen(cmd + (["--follow"] if follow else []), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_for(predicate, seconds: float, procs=(), what="condition") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        for proc in procs:
            assert proc.poll() in (None, 0), proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finish(procs, seconds=60) -> None:
    for proc in procs:
        try:
            assert proc.wait(timeout=seconds) == 0, proc.stderr.read().decode()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()


def main() -> None:  # one worker: python -m tests.finance.test_scaleout SOURCE DSN SINK DELAY [--follow]
    source, dsn, sink, delay = sys.argv[1:5]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    run_monitor(_config([source], dsn, Path(sink), follow="--follow" in sys.argv),
                model=SlowKeywordModel(float(delay)), stop=lambda: bool(stopping))


# ------------------------------------------------------------------ tests


def test_stream_positions_sort_like_ids_and_bad_messages_get_a_reason():
    assert position(b"5-3") == 5 * 2**20 + 3 and position("5-3") < position("5-4") < position("6-0")
    line = message_line("k", b"7-0", {b"doc": b'{"id": 1}'}, 1, max_deliveries=10, max_line_bytes=100)
    assert (line.start, line.raw, line.problem) == (7 * 2**20, '{"id": 1}', None)
    problem = lambda fields, times=1: message_line("k", b"7-1", fields, times, max_deliveries=3,  # noqa: E731
                                                   max_line_bytes=100).problem
    assert problem({b"doc": b"\xff"}).startswith("bad encoding: byte 0xff at 0")
    assert problem({b"body": b"{}"}) == "bad message: no 'doc' field (fields: ['body'])"
    assert problem({b"doc": b"x" * 101}) == "line over 100 bytes (101 bytes)"
    assert problem({b"doc": b"{}"}, times=4).startswith("delivered 4 times without being acknowledged")


def test_two_workers_one_killed_repeatedly_store_everything_once_as_one_worker_would(
        tmp_path, redis_server, stream_name, pg_dsn):
    lines, malformed = _messages()
    reference = _reference(tmp_path, lines)
    assert reference["alerts"] and any(row[3] for row in reference["documents"])  # alerts and late documents
    _publish(redis_server, stream_name, lines)
    source = f"{redis_server.url}/{stream_name}?group=monitor&min_idle=1000&block=100"
    sink = tmp_path / "alerts.jsonl"
    steady = _start_worker(source, pg_dsn, sink)
    victim = _start_worker(source, pg_dsn, sink)
    try:
        for kill_at in (60, 160, 260):  # documents stored when the victim is killed
            _wait_for(lambda: _pg_count(pg_dsn) >= kill_at, 60, [steady, victim], f"{kill_at} documents")
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            victim = _start_worker(source, pg_dsn, sink)  # a new consumer name: the old one's messages are claimed
        _finish([steady, victim])
    finally:
        for proc in (steady, victim):
            if proc.poll() is None:
                proc.kill()
    got = _pg_results(pg_dsn)
    assert got["quarantine"] == reference["quarantine"] == malformed
    for key in ("documents", "scores", "mentions", "aggregates", "alerts", "dirty", "pending"):
        assert got[key] == reference[key], key
    assert redis_server.client().xpending(stream_name, "monitor")["pending"] == 0  # everything acknowledged
    delivered = {(a["entity"], a["rule"], a["window_start"]) for a in map(json.loads, sink.read_text().splitlines())}
    assert len(delivered) == len(reference["alerts"])  # each alert sent (at least once)


def test_a_broker_restart_mid_stream_loses_nothing(tmp_path, redis_server, stream_name, pg_dsn):
    lines, _ = _messages()
    half, reference = len(lines) // 2, _reference(tmp_path, lines)
    expected = len(reference["documents"])
    _publish(redis_server, stream_name, lines[:half])
    source = f"{redis_server.url}/{stream_name}?group=monitor&min_idle=1000&block=100"
    workers = [_start_worker(source, pg_dsn, tmp_path / "alerts.jsonl", follow=True, delay=0.01) for _ in range(2)]
    try:
        _wait_for(lambda: _pg_count(pg_dsn) >= 50, 60, workers, "50 documents")
        redis_server.restart(down_seconds=1.0)  # workers are reading, scoring and acknowledging meanwhile
        _publish(redis_server, stream_name, lines[half:])
        _wait_for(lambda: _pg_count(pg_dsn) == expected and _pg_count(pg_dsn, "SELECT COUNT(*) FROM quarantine") > 0
                  and redis_server.client().xpending(stream_name, "monitor")["pending"] == 0, 60, workers,
                  "every document")
        for proc in workers:
            proc.send_signal(signal.SIGTERM)  # a clean stop: the batch in hand is finished first
        _finish(workers)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
    run_monitor(_config([source], pg_dsn, tmp_path / "alerts.jsonl"), model=KeywordModel())  # drain: input complete
    got = _pg_results(pg_dsn)
    for key in ("documents", "aggregates", "alerts"):
        assert got[key] == reference[key], key


def test_poison_messages_are_quarantined_acknowledged_and_never_retried(tmp_path, redis_server, stream_name, pg_dsn):
    client = redis_server.client()
    good = (demo_stream_dir() / "stream.jsonl").read_text().splitlines()[:6]
    for line in good[:3]:
        client.xadd(stream_name, {"doc": line})
    client.xadd(stream_name, {"doc": b'{"id": "p1", "text": "Acme \xff"}'})
    client.xadd(stream_name, {"body": "no doc field"})
    client.xadd(stream_name, {"doc": "{not json"})
    client.xadd(stream_name, {"doc": "x" * 2000})
    killer = client.xadd(stream_name, {"doc": good[3]})
    for line in good[4:]:
        client.xadd(stream_name, {"doc": line})
    # A group that has seen everything but one message, which (we pretend) killed the 20 workers that took it.
    client.xgroup_create(stream_name, "seen", id="0")
    client.xreadgroup("seen", "ghost", {stream_name: ">"}, count=100)
    client.xack(stream_name, "seen", *[mid for mid, _ in client.xrange(stream_name) if mid != killer])
    client.xclaim(stream_name, "seen", "ghost", 0, [killer], retrycount=20)
    source = f"{redis_server.url}/{stream_name}?group=seen&min_idle=0&block=50"
    cfg = replace(_config([source], pg_dsn, tmp_path / "alerts.jsonl"), max_line_bytes=1000)
    stats = run_monitor(cfg, model=KeywordModel())
    assert (stats.lines, stats.quarantined, stats.new_documents) == (1, 1, 0)
    with psycopg.connect(pg_dsn) as conn:
        (reason,), = conn.execute("SELECT reason FROM quarantine").fetchall()
    assert reason.startswith("delivered 21 times without being acknowledged")
    assert client.xpending(stream_name, "seen")["pending"] == 0

    fresh = replace(cfg, inputs=(f"{redis_server.url}/{stream_name}?group=fresh&block=50",))  # every message once
    stats = run_monitor(fresh, model=KeywordModel())
    assert stats.totals["quarantine_reasons"] == {
        "delivered 21 times without being acknowledged (over max_deliveries=10)": 1, "bad encoding": 1,
        "bad message": 1, "bad JSON": 1, "line over 1000 bytes (2000 bytes)": 1}
    assert (stats.lines, stats.new_documents, stats.quarantined) == (10, 6, 4)
    assert client.xpending(stream_name, "fresh")["pending"] == 0
    again = run_monitor(fresh, model=KeywordModel())  # nothing is redelivered, nothing quarantined twice
    assert again.lines == 0 and again.totals == stats.totals


def test_postgres_store_on_a_file_matches_sqlite_and_both_refuse_a_nul_row_alone(tmp_path, pg_dsn):
    lines, _ = _messages()
    lines.insert(7, json.dumps({"id": "nul", "ts": "2026-03-02T09:00:00Z", "text": "Acme Corp \u0000 falls"}))
    reference = _reference(tmp_path, lines)
    path = tmp_path / "reference.jsonl"
    cfg = _config([path], pg_dsn, tmp_path / "pg-alerts.jsonl")
    first = run_monitor(cfg, model=KeywordModel())
    got = _pg_results(pg_dsn)
    assert reference["documents"] == got["documents"]  # a NUL is refused at the door, for every store alike
    assert "nul" not in [d[0] for d in got["documents"]] and got["quarantine"] == reference["quarantine"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT reason FROM quarantine WHERE line LIKE '%nul%'").fetchone()[0].startswith(
            "bad text: holds a NUL")
    again = run_monitor(cfg, model=KeywordModel())
    assert again.lines == 0 and again.totals == first.totals


def test_a_refresh_that_read_before_another_batch_committed_writes_nothing(pg_dsn):
    """The guard against a slow worker overwriting newer aggregates: it must trip."""
    from solutions.finance.monitor.aggregate import WindowStats

    def record(doc_id, ts, position):
        doc = {"id": doc_id, "ts": ts, "ts_text": "t", "text": "Acme", "source": None, "origin": "f"}
        score = {"doc_id": doc_id, "p_negative": 0.1, "p_neutral": 0.8, "p_positive": 0.1, "score": 0.0,
                 "label": "neutral"}
        return Record(doc, score, ("ACME",), position, "line")

    first, second = PostgresStore(pg_dsn, 3600), PostgresStore(pg_dsn, 3600)
    try:
        first.commit_batch(source_key="f", offset=1, records=[record("a", 7200.0, 0)], quarantined=[])
        assert first.dirty_from() == {"ACME": 7200}
        second.commit_batch(source_key="f", offset=2, records=[record("b", 7300.0, 1)], quarantined=[])
        first.commit_windows("ACME", 7200, [WindowStats("ACME", 7200, 3600, 1, 0, 0.0, 0.0)])  # stale: skipped
        assert first.aggregates("ACME") == [] and second.dirty_from() == {"ACME": 7200}
        second.commit_windows("ACME", 7200, [WindowStats("ACME", 7200, 3600, 2, 0, 0.0, 0.0)])
        assert [w.count for w in first.aggregates("ACME")] == [2] and first.dirty_from() == {}
    finally:
        first.close()
        second.close()


if __name__ == "__main__":
    main()


def test_an_older_postgres_database_is_migrated_on_start_and_keeps_every_row(pg_dsn):
    """The tables as a worker wrote them before per-company scores: every row stays, old rows keep
    the document's score, new rows carry the company's own."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("""CREATE TABLE documents (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, ts_text TEXT
            NOT NULL, text TEXT NOT NULL, source TEXT, origin TEXT NOT NULL, position BIGINT NOT NULL,
            ingested_at DOUBLE PRECISION NOT NULL, late SMALLINT)""")
        conn.execute("""CREATE TABLE scores (doc_id TEXT PRIMARY KEY REFERENCES documents(id), p_negative DOUBLE
            PRECISION NOT NULL, p_neutral DOUBLE PRECISION NOT NULL, p_positive DOUBLE PRECISION NOT NULL,
            score DOUBLE PRECISION NOT NULL, label TEXT NOT NULL, model TEXT)""")
        conn.execute("""CREATE TABLE mentions (doc_id TEXT NOT NULL REFERENCES documents(id), entity TEXT NOT NULL,
            window_start BIGINT NOT NULL, PRIMARY KEY (doc_id, entity))""")
        conn.execute("INSERT INTO documents VALUES ('old', 7300, 't', '$ACME falls.', NULL, 'f', 0, 0, 0)")
        conn.execute("INSERT INTO scores VALUES ('old', 0.7, 0.2, 0.1, -0.6, 'negative', 'v1')")
        conn.execute("INSERT INTO mentions VALUES ('old', 'ACME', 7200)")
    own = {"p_negative": 0.05, "p_neutral": 0.15, "p_positive": 0.8, "score": 0.75, "label": "positive",
           "sentences": 1, "evidence": json.dumps([{"text": "$ACME wins.", "start": 0, "end": 11, "label": "positive",
                                                    "score": 0.75}])}
    doc = {"id": "new", "ts": 7400.0, "ts_text": "t", "text": "$ACME wins. Markets fall.", "source": None,
           "origin": "f"}
    score = {"doc_id": "new", "p_negative": 0.4, "p_neutral": 0.3, "p_positive": 0.3, "score": -0.1,
             "label": "negative", "model": "v2", "sentences": 2, "sentences_dropped": 0, "evidence": "[]"}
    store = PostgresStore(pg_dsn, 3600)
    try:
        assert store.window_scores("ACME", 0) == {7200: ([-0.6], ["negative"])}
        store.commit_batch(source_key="f", offset=10, records=[Record(doc, score, ("ACME",), 5, "l", {"ACME": own})],
                           quarantined=[])
        assert store.window_scores("ACME", 0) == {7200: ([0.75, -0.6], ["positive", "negative"])}
        (new,) = store.evidence_sentences("ACME", ["new"])
        assert new["label"] == "positive" and new["evidence"][0]["text"] == "$ACME wins."
        assert store.db.execute("SELECT COUNT(*) FROM mentions").fetchone()[0] == 2
    finally:
        store.close()
    PostgresStore(pg_dsn, 3600).close()  # a second start on the migrated database changes nothing
