"""A real `verticals finance monitor --follow` process killed with SIGKILL mid-stream while a
writer appends (with half-written lines), then restarted: no document lost, none counted twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import REPO

TICKERS = ["ACME", "NOVA", "ORBT", "BRDG"]


def _stream(n: int) -> tuple[list[str], set[str], int]:
    """n documents (every 17th repeats an earlier id) with a malformed line every 40th."""
    lines, ids, malformed = [], set(), 0
    for i in range(n):
        if i % 40 == 39:
            lines.append('{"id": "broken", "ts": ')
            malformed += 1
            continue
        doc_id = f"d{i - 5}" if i % 17 == 16 else f"d{i}"
        ids.add(doc_id)
        lines.append(json.dumps({"id": doc_id, "ts": f"2026-03-02T{9 + i // 600:02d}:{(i // 10) % 60:02d}:00Z",
                                 "text": f"${TICKERS[i % 4]} update number {i}: shares fell after results"}))
    return lines, ids, malformed


def _count(db, sql) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _write(path, lines) -> None:
    """Append lines, each split in two writes so the reader can see half a line."""
    with open(path, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line[:10])
            handle.flush()
            handle.write(line[10:] + "\n")
        handle.flush()


def test_monitor_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(tmp_path, tiny_sentiment_run):
    lines, ids, malformed = _stream(1000)
    stream, db = tmp_path / "stream.jsonl", tmp_path / "m.db"
    stream.write_text("")
    cmd = [sys.executable, "-m", "verticals.cli", "finance", "monitor", str(stream), "--db", str(db),
           "--model", str(tiny_sentiment_run), "--batch-size", "8", "--poll-seconds", "0.02",
           "--sink", f"jsonl:{tmp_path / 'alerts.jsonl'}", "--drain-seconds", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd + ["--follow"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _write(stream, lines[:300])
        deadline = time.monotonic() + 90
        while _count(db, "SELECT COUNT(*) FROM documents") == 0:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "monitor never stored a document"
            time.sleep(0.05)
        for start in range(300, 700, 50):  # keep writing while it works, then kill it mid-stream
            _write(stream, lines[start:start + 50])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stored_at_kill = _count(db, "SELECT COUNT(*) FROM documents")
    assert 0 < stored_at_kill < len(ids)
    _write(stream, lines[700:])

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _count(db, "SELECT COUNT(*) FROM documents") == len(ids)
    assert _count(db, "SELECT COUNT(DISTINCT id) FROM documents") == len(ids)
    assert _count(db, "SELECT COUNT(*) FROM scores") == len(ids)
    assert _count(db, "SELECT COUNT(*) FROM mentions") == len(ids)  # one cashtag each
    assert _count(db, "SELECT COUNT(*) FROM quarantine") == malformed
    assert _count(db, "SELECT SUM(count) FROM aggregates") == len(ids)
    assert _count(db, "SELECT COUNT(*) FROM dirty") == 0
    assert _count(db, "SELECT offset FROM offsets") == stream.stat().st_size
    stored = {r[0] for r in sqlite3.connect(db).execute("SELECT id FROM documents")}
    assert stored == ids
