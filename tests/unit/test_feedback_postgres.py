"""core.mlops.feedback_postgres beyond what it shares with the SQLite log (tests/unit/test_feedback.py):
which backend a target opens, readers that never create a log, and a database outage (a real
PostgreSQL server stopped and started again): routed batches kept and written later, feedback
refused while down, calls in the backoff failing at once, and what could not be written counted."""

from __future__ import annotations

import itertools
import logging
import sys
import time

import pytest

from core.foundation.errors import UserError
from core.mlops.feedback import PredictionLog, PredictionLogUnavailable
from core.mlops.feedback_postgres import PostgresPredictionLog
from core.mlops.prediction_logs import is_database_url, open_prediction_log, reader_options, shown

_names = itertools.count()
FAST = {"retry_seconds": 0.05, "max_retry_seconds": 0.2}


def route(text, label="card"):
    return {"text": text, "label": label, "confidence": 0.9, "fallback_reason": None, "in_scope_score": 0.5}


@pytest.fixture
def dsn(postgres):
    return postgres.schema_dsn(f"outage_{next(_names)}")


def test_a_url_opens_postgresql_and_a_path_opens_sqlite(dsn, tmp_path):
    assert is_database_url(dsn) and not is_database_url(str(tmp_path / "p.db")) and not is_database_url(tmp_path)
    with open_prediction_log(dsn) as log:
        assert isinstance(log, PostgresPredictionLog) and log.backlog_rows == 0 and log.dropped_rows == 0
    with open_prediction_log(tmp_path / "p.db", outage=FAST) as log:
        assert isinstance(log, PredictionLog) and log.backlog_rows == 0
    assert shown("postgresql://ann:secret@db.example/logs") == "postgresql://ann:***@db.example/logs"


def test_readers_never_create_a_log_and_a_dead_server_is_a_user_error(postgres, tmp_path):
    empty = postgres.schema_dsn(f"empty_{next(_names)}")
    with pytest.raises(UserError, match="holds no prediction log"):
        open_prediction_log(empty, must_exist=True, **reader_options())
    with pytest.raises(UserError, match="does not exist"):
        open_prediction_log(tmp_path / "missing.db", must_exist=True)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(UserError, match=r"cannot connect to PostgreSQL at postgresql://ann:\*\*\*@"):
        open_prediction_log(f"postgresql://ann:pw@/x?host={tmp_path}&port=1")
    with pytest.raises(UserError, match="cannot connect") as bad_url:
        open_prediction_log("postgresql://ann:s3cret@[::1")
    assert "s3cret" not in str(bad_url.value)


def test_without_psycopg_a_url_is_a_user_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the [scale] extra sees
    with pytest.raises(UserError, match=r"needs psycopg: pip install -e '\.\[scale\]'"):
        open_prediction_log("postgresql://ann@db.example/logs")


def test_an_outage_keeps_routed_batches_and_writes_them_when_the_server_is_back(postgres, dsn, caplog):
    caplog.set_level(logging.WARNING, "verticals.mlops.prediction_log")
    with open_prediction_log(dsn, outage=FAST) as log, open_prediction_log(dsn) as other_replica:
        (before,) = log.log([route("before")], "v1")
        postgres.stop()
        try:
            with pytest.raises(PredictionLogUnavailable) as down:
                log.log([route("during 1"), route("during 2")], "v1")
            kept = down.value.request_ids
            assert len(kept) == 2 and log.backlog_rows == 2
            started = time.perf_counter()
            with pytest.raises(PredictionLogUnavailable, match="next try in"):  # in the backoff: no connect
                log.log([route("during 3")], "v1")
            with pytest.raises(PredictionLogUnavailable, match="send it again"):
                time.sleep(0.3)  # past the backoff: it tries the server, which is still down
                log.record_feedback(before, "card", text="before")
            assert time.perf_counter() - started < 5 and log.backlog_rows == 3
        finally:
            postgres.start()
        time.sleep(0.3)
        log.log([route("after")], "v1")  # reconnects, writes the kept batches first
        assert log.backlog_rows == 0 and log.dropped_rows == 0
        assert other_replica.counts()["predictions"] == 5  # its idle connection died with the server: replaced
        assert [r["request_id"] for r in other_replica.unlabelled()][1:3] == kept  # routing order kept
        assert other_replica.record_feedback(kept[0], "transfer", text="during 1")["predicted_label"] == "card"
    assert "is unavailable" in caplog.text and "wrote 3 routed rows kept during the outage" in caplog.text


def test_a_full_backlog_drops_its_oldest_batches_and_close_counts_what_it_could_not_write(postgres, dsn, caplog):
    log = open_prediction_log(dsn, outage=FAST | {"max_backlog_rows": 3})
    postgres.stop()
    try:
        for i in range(3):
            with pytest.raises(PredictionLogUnavailable):
                log.log([route(f"a{i}"), route(f"b{i}")], "v1")
        assert log.backlog_rows == 2 and log.dropped_rows == 4  # 6 routed, the newest batch kept
        assert "dropped unwritten" in caplog.text
        log.close()
        assert log.dropped_rows == 6 and "2 routed rows not written" in caplog.text
    finally:
        postgres.start()


def test_two_replicas_opening_at_once_create_the_schema_once(dsn):
    import threading

    logs, errors = [], []

    def open_one():
        try:
            logs.append(open_prediction_log(dsn))
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(logs) == 4
    ids = [log.log([route(f"from {i}")], "v1")[0] for i, log in enumerate(logs)]
    assert logs[0].counts()["predictions"] == 4 and len(set(ids)) == 4
    for log in logs:
        log.close()
