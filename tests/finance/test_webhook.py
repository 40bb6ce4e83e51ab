"""The webhook sink against a real HTTP server on 127.0.0.1 that fails its first calls."""

from __future__ import annotations

import json
import sqlite3
import threading
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
    from core.errors import UserError
    from solutions.finance.monitor.sinks import build_sink

    with pytest.raises(UserError, match="sink|webhook"):
        build_sink(spec)
