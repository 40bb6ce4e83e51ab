"""Two `verticals serve` replicas (real processes) sharing one PostgreSQL prediction log.

A round-robin client (what a load balancer does) sends each route to one replica and its feedback
to the other: feedback must find the request whichever replica routed it. One replica is killed
with SIGKILL mid-load: no acknowledged feedback is lost and the other keeps serving. PostgreSQL is
stopped: routes still answer (counted in /metrics), feedback is refused with a 503, and once the
server is back the replicas write what they kept and log again. The server is real
(tests/servers.py); the tests skip, saying why, without PostgreSQL 15 or psycopg.
"""

from __future__ import annotations

import os
import re
import threading
import time

import httpx
import pytest

from core.mlops.prediction_logs import open_prediction_log, reader_options
from tests.http_helpers import free_port, start_cli_server

TEXTS = ["my card was declined", "card declined at the shop", "my transfer is pending", "transfer to another bank"]


class Replicas:
    """`verticals serve RUN --log DSN` processes on free ports; `ensure()` (re)starts any not running."""

    def __init__(self, run, dsn: str, folder, n: int = 2):
        self.run, self.dsn, self.folder = run, dsn, folder
        self.ports = [free_port() for _ in range(n)]
        self.procs: list = [None] * n
        self.env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def ensure(self) -> None:
        down = [i for i, p in enumerate(self.procs) if p is None or p.poll() is not None]
        threads = [threading.Thread(target=self._start, args=(i,)) for i in down]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(p is not None and p.poll() is None for p in self.procs), "a replica did not start"

    def _start(self, i: int) -> None:
        self.procs[i] = start_cli_server(["serve", str(self.run), "--log", self.dsn], self.ports[i], self.env,
                                         self.folder / f"replica-{i}.log", timeout=120)

    def metric(self, i: int, name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", httpx.get(f"{self.url(i)}/metrics").text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def close(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


@pytest.fixture(scope="module")
def cluster(served_run, postgres, tmp_path_factory):
    replicas = Replicas(served_run, postgres.schema_dsn("replicas"), tmp_path_factory.mktemp("replicas"))
    yield replicas
    replicas.close()


@pytest.fixture
def replicas(cluster):
    cluster.ensure()
    return cluster


def _log(dsn: str):
    return open_prediction_log(dsn, must_exist=True, **reader_options())


def test_feedback_reaches_the_log_whichever_replica_receives_it(replicas, served_run, tmp_path):
    from solutions.support.drift_report import write_drift_report  # lazy: numpy-heavy report modules
    from verticals.feedback_sources import read_feedback  # lazy: as above

    with _log(replicas.dsn) as log:
        before = log.counts()
    with httpx.Client(timeout=30) as client:
        for i in range(24):
            text = TEXTS[i % len(TEXTS)]
            routed = client.post(f"{replicas.url(i % 2)}/v1/route", json={"text": text}).json()
            label = "card" if "card" in text else "transfer"
            reply = client.post(f"{replicas.url((i + 1) % 2)}/v1/feedback",  # the replica that did not route it
                                json={"request_id": routed["request_id"], "intent": label, "text": text})
            assert reply.status_code == 200, reply.text
            assert reply.json()["predicted_label"] == routed["intent"]
    with _log(replicas.dsn) as log:
        assert log.counts() == {"predictions": before["predictions"] + 24, "feedback": before["feedback"] + 24}
    assert all(replicas.metric(i, "verticals_prediction_log_write_seconds_count") >= 12 for i in range(2))
    examples = read_feedback(replicas.dsn)  # what `verticals retrain --feedback URL` learns from
    assert len(examples) >= 24 and {e.label for e in examples} == {"card", "transfer"}
    report = write_drift_report(replicas.dsn, served_run, tmp_path / "drift")  # `verticals support drift URL`
    assert report["n"] >= 24 and (tmp_path / "drift" / "drift.md").is_file()


def test_a_database_outage_never_fails_a_route_and_logging_resumes(replicas, postgres):
    failures = [replicas.metric(i, "verticals_prediction_log_failures_total") for i in range(2)]
    kept: list[tuple[str, str]] = []
    postgres.stop()
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(8):
                reply = client.post(f"{replicas.url(i % 2)}/v1/route", json={"text": TEXTS[i % len(TEXTS)]})
                assert reply.status_code == 200, reply.text
                kept.append((reply.json()["request_id"], TEXTS[i % len(TEXTS)]))
            refused = client.post(f"{replicas.url(0)}/v1/feedback",
                                  json={"request_id": kept[0][0], "intent": "card", "text": kept[0][1]})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        for i in range(2):
            assert replicas.metric(i, "verticals_prediction_log_failures_total") >= failures[i] + 1
            assert replicas.metric(i, "verticals_prediction_log_backlog_rows") >= 1
    finally:
        postgres.start()
    deadline = time.monotonic() + 20
    with httpx.Client(timeout=30) as client:
        while any(replicas.metric(i, "verticals_prediction_log_backlog_rows") for i in range(2)):
            assert time.monotonic() < deadline, "the replicas did not write what they kept"
            for i in range(2):
                client.post(f"{replicas.url(i)}/v1/route", json={"text": "card declined again"})
            time.sleep(0.25)
        for n, (rid, text) in enumerate(kept):  # each kept id is in the shared log now, on either replica
            reply = client.post(f"{replicas.url(n % 2)}/v1/feedback", json={"request_id": rid, "intent": "card",
                                                                            "text": text})
            assert reply.status_code == 200, reply.text
    assert all(replicas.metric(i, "verticals_prediction_log_dropped_rows_total") == 0 for i in range(2))


def _load(replicas, stop: threading.Event, acknowledged: dict, served_after_kill: list, killed: threading.Event,
          seed: int) -> None:
    """Route on one replica and send the feedback to the other, round robin; on a connection error
    (a dead replica) try the next one, as a load balancer would. Records acknowledged feedback."""
    n = seed
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            n += 1
            text = TEXTS[n % len(TEXTS)]
            routed = _first_answer(client, replicas, n, "/v1/route", {"text": text})
            if routed is None:
                continue
            rid = routed.json()["request_id"]
            label = "card" if n % 3 else "transfer"
            reply = _first_answer(client, replicas, n + 1, "/v1/feedback",
                                  {"request_id": rid, "intent": label, "text": text})
            if reply is not None and reply.status_code == 200:
                acknowledged[rid] = label
                if killed.is_set():
                    served_after_kill.append(rid)


def _first_answer(client, replicas, start: int, path: str, body: dict):
    for k in range(2):
        try:
            reply = client.post(f"{replicas.url((start + k) % 2)}{path}", json=body)
        except httpx.TransportError:
            continue
        assert reply.status_code == 200, reply.text
        return reply
    return None


def test_killing_a_replica_mid_load_loses_no_acknowledged_feedback(replicas):
    stop, killed = threading.Event(), threading.Event()
    acknowledged: dict[str, str] = {}
    after_kill: list[str] = []
    clients = [threading.Thread(target=_load, args=(replicas, stop, acknowledged, after_kill, killed, s))
               for s in range(4)]
    for t in clients:
        t.start()
    try:
        time.sleep(2.0)
        replicas.procs[0].kill()  # SIGKILL, mid-load
        killed.set()
        replicas.procs[0].wait(timeout=10)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=60)
    assert len(after_kill) > 10, "the surviving replica did not keep serving"
    assert httpx.get(f"{replicas.url(1)}/readyz").status_code == 200
    with _log(replicas.dsn) as log:
        stored = {e.id: e.label for e in log.labelled()}
    assert {rid: stored.get(rid) for rid in acknowledged} == acknowledged
