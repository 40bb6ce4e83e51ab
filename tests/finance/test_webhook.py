"""The webhook sink against a real HTTP server on 127.0.0.1 that fails its first calls, and
against a receiver that answers garbage instead of HTTP."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from solutions.finance.monitor.loop import MonitorConfig, run_monitor
from tests.finance.conftest import demo_stream_dir


class FlakyReceiver:
    """Answers 503 to the first `fail_first` POSTs, then 200; records what it accepted."""

    def __init__(self, fail_first: int):
        self.fail_first, self.calls, self.accepted = fail_first, 0, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.calls += 1
                ok = receiver.calls > receiver.fail_first
                if ok:
                    receiver.accepted.append(body)
                self.send_response(200 if ok else 503)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _config(tmp_path, url, **kw):
    demo = demo_stream_dir()
    return MonitorConfig(inputs=(str(demo / "stream.jsonl"),), db=tmp_path / "m.db", model="unused",
                         watchlist=demo / "watchlist.yaml", sinks=(f"webhook:{url}",),
                         retry_base_seconds=0.05, **kw)


def test_webhook_retries_with_backoff_until_delivered(tmp_path, keyword_model):
    with FlakyReceiver(fail_first=3) as receiver:
        stats = run_monitor(_config(tmp_path, receiver.url, drain_seconds=10), model=keyword_model)
    n = stats.totals["alerts"]
    assert n >= 1 and stats.totals["undelivered"] == 0
    assert sorted(a["alert_id"] for a in receiver.accepted) == list(range(1, n + 1))  # each once
    assert receiver.calls == n + 3
    attempts = sqlite3.connect(tmp_path / "m.db").execute("SELECT SUM(attempts) FROM deliveries").fetchone()[0]
    assert attempts == n + 3
    assert {"entity", "rule", "window_start", "value", "baseline", "evidence"} <= set(receiver.accepted[0])


def test_undelivered_alerts_are_kept_and_sent_by_the_next_run(tmp_path, keyword_model):
    with FlakyReceiver(fail_first=10**6) as down:  # always failing
        stats = run_monitor(_config(tmp_path, down.url, drain_seconds=0.3), model=keyword_model)
    n = stats.totals["alerts"]
    assert stats.totals["undelivered"] == n >= 1 and down.accepted == []
    errors = sqlite3.connect(tmp_path / "m.db").execute("SELECT last_error FROM deliveries").fetchall()
    assert all("503" in e[0] for e in errors)
    with FlakyReceiver(fail_first=0) as up:  # back on a new ephemeral port: point the kept deliveries at it
        db = sqlite3.connect(tmp_path / "m.db")
        db.execute("UPDATE deliveries SET sink=?", (f"webhook:{up.url}",))
        db.commit()
        again = run_monitor(_config(tmp_path, up.url, drain_seconds=5), model=keyword_model)
    assert again.new_documents == 0 and again.totals["undelivered"] == 0
    assert sorted(a["alert_id"] for a in up.accepted) == list(range(1, n + 1))


@pytest.mark.parametrize("spec", ["webhook:ftp://x", "carrier-pigeon", "jsonl:"])
def test_bad_sink_spec_is_a_user_error(spec):
    from core.foundation.errors import UserError
    from solutions.finance.monitor.sinks import build_sink

    with pytest.raises(UserError, match="sink|webhook"):
        build_sink(spec)


class TcpReceiver:
    """A TCP server on 127.0.0.1 that hands each accepted connection to `handle` in its own thread loop."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/alerts"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed by __exit__
                return
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.close()


class GarbageReceiver(TcpReceiver):
    """Reads each request in full, answers "garbage" (not an HTTP status line) and closes: urllib
    raises http.client.BadStatusLine, which is not an OSError."""

    calls = 0

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), 0)
            while len(body) < length and (chunk := conn.recv(65536)):
                body += chunk
            self.calls += 1
            conn.sendall(b"garbage\r\n\r\n")


def test_a_receiver_that_answers_garbage_is_retried_and_never_stops_the_monitor(tmp_path, keyword_model):
    alerts_file = tmp_path / "alerts.jsonl"
    with GarbageReceiver() as garbage:
        cfg = replace(_config(tmp_path, garbage.url, drain_seconds=0.5),
                      sinks=(f"webhook:{garbage.url}", f"jsonl:{alerts_file}"))
        stats = run_monitor(cfg, model=keyword_model)
        n = stats.totals["alerts"]
        assert stats.totals["documents"] == 394 and n >= 1  # ingestion went on
        assert len(alerts_file.read_text().splitlines()) == n  # the other sink got every alert
        db = sqlite3.connect(tmp_path / "m.db")
        rows = db.execute("SELECT attempts, delivered_at, last_error FROM deliveries WHERE sink LIKE 'webhook:%'"
                          ).fetchall()
        assert len(rows) == n and all(delivered is None for _, delivered, _ in rows)
        assert all("BadStatusLine" in error for _, _, error in rows)
        first = sum(attempts for attempts, _, _ in rows)
        assert first == garbage.calls >= 2  # retried with backoff, each call one attempt
        again = run_monitor(cfg, model=keyword_model)  # a restart retries before reading: no crash
        assert again.lines == 0 and garbage.calls > first
        assert db.execute("SELECT SUM(attempts) FROM deliveries WHERE sink LIKE 'webhook:%'").fetchone()[0] \
            == garbage.calls


class HangingReceiver(TcpReceiver):
    """Accepts connections and never answers: every webhook call runs into its timeout."""

    def __init__(self):
        super().__init__()
        self.held: list[socket.socket] = []

    def handle(self, conn: socket.socket) -> None:
        self.held.append(conn)  # read nothing, answer nothing

    def __exit__(self, *exc):
        super().__exit__(*exc)
        for conn in self.held:
            conn.close()


def test_a_hanging_webhook_does_not_slow_reading_and_scoring(tmp_path, keyword_model):
    quick = tmp_path / "quick"
    quick.mkdir()
    baseline = run_monitor(replace(_config(quick, "http://127.0.0.1:9/unused", drain_seconds=0),
                                   sinks=(f"jsonl:{quick / 'alerts.jsonl'}",)), model=keyword_model)
    alerts_file = tmp_path / "alerts.jsonl"
    with HangingReceiver() as hanging:
        cfg = replace(_config(tmp_path, hanging.url, drain_seconds=0),
                      sinks=(f"webhook:{hanging.url}", f"jsonl:{alerts_file}"))
        stats = run_monitor(cfg, model=keyword_model)
    n = stats.totals["alerts"]
    assert n >= 2 and stats.totals["documents"] == baseline.totals["documents"] == 394
    # reading and scoring ran at their own pace: before, each webhook attempt held the loop for 5 s
    assert stats.seconds < baseline.seconds + 3.0, (stats.seconds, baseline.seconds)
    assert len(alerts_file.read_text().splitlines()) == n  # the other sink got every alert
    db = sqlite3.connect(tmp_path / "m.db")
    undelivered = db.execute("SELECT COUNT(*) FROM deliveries WHERE sink LIKE 'webhook:%' AND delivered_at IS NULL"
                             ).fetchone()[0]
    assert undelivered == n  # kept for the next run: nothing lost
