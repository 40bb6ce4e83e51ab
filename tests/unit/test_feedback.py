"""core.mlops.feedback: the prediction log and feedback, in a real SQLite file and (the same
behaviour) in a real PostgreSQL server (core.mlops.feedback_postgres; skipped, saying why, where
PostgreSQL 15 or psycopg is missing)."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import threading

import pytest

from core.foundation.errors import UserError
from core.mlops.feedback import LABEL_OUT_OF_SCOPE, MAX_LABEL_CHARS, MAX_TEXT_CHARS, FeedbackExample, PredictionLog, UnknownRequestId
from core.mlops.prediction_logs import open_prediction_log


def route(text, label="card", confidence=0.9, reason=None, score=0.7):
    return {"text": text, "label": label, "confidence": confidence, "fallback_reason": reason,
            "in_scope_score": score, "queue": "cards", "top_k": []}


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


_schemas = itertools.count()


class Backend:
    """Opens logs by name on one backend: files in tmp_path, or schemas of the session's PostgreSQL."""

    def __init__(self, kind: str, tmp_path, request):
        self.kind, self.tmp_path, self.targets = kind, tmp_path, {}
        self.server = request.getfixturevalue("postgres") if kind == "postgresql" else None

    def target(self, name: str):
        if name not in self.targets:
            self.targets[name] = (self.tmp_path / f"{name}.db" if self.server is None else
                                  self.server.schema_dsn(f"{name}_{next(_schemas)}"))
        return self.targets[name]

    def open(self, name: str = "predictions", **options):
        return open_prediction_log(self.target(name), **options)

    def rows(self, log, sql: str) -> list[tuple]:
        """A raw query on the log's connection; ORDER_SEQ is the backend's insertion order."""
        return log._db.execute(sql.replace("ORDER_SEQ", "rowid" if self.server is None else "seq")).fetchall()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    return Backend(request.param, tmp_path, request)


@pytest.fixture
def log(backend):
    with backend.open() as opened:
        yield opened


def test_a_router_that_names_its_label_otherwise_passes_its_key(log):
    rows = [{"text": "lost my card", "intent": "card", "confidence": 0.9}]  # the support router's rows
    with pytest.raises(UserError, match="no 'label'"):
        log.log(rows, "v1")
    (rid,) = log.log(rows, "v1", label_key="intent")
    assert log.window_stats()["labels"] == {"card": 1}
    assert log.record_feedback(rid, "transfer", text="lost my card")["predicted_label"] == "card"


def test_log_keeps_the_hash_not_the_text_by_default_and_counts_the_window(log, backend):
    ids = log.log([route("my card was declined"), route("weather?", "transfer", 0.3, LABEL_OUT_OF_SCOPE, -2.0),
                   route("hmm", "transfer", 0.45, "low_confidence", None)], "v1")
    assert len(ids) == 3 and len(set(ids)) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    rows = backend.rows(log, "SELECT request_id, label, text, text_sha256, in_scope_score FROM predictions "
                             "ORDER BY ORDER_SEQ")
    assert [r[0] for r in rows] == ids and [r[1] for r in rows] == ["card", "transfer", "transfer"]
    assert all(r[2] is None for r in rows)
    assert rows[0][3] == hashlib.sha256(b"my card was declined").hexdigest() and rows[2][4] is None
    stats = log.window_stats(model_version="v1")
    assert stats["n"] == 3 and stats["labels"] == {"card": 1, "transfer": 2}
    assert stats["confidence"] == [0.9, 0.3, 0.45]
    assert stats["fallback_rate"] == 2 / 3 and stats["out_of_scope_rate"] == 1 / 3
    assert log.window_stats(model_version="v2") == {"n": 0, "confidence": [], "labels": {}, "fallback_rate": None,
                                                    "out_of_scope_rate": None, "set_confidence": []}
    assert stats["set_confidence"] == [None, None, None]  # single-label routes carry none
    assert log.model_versions() == {"v1": 3} and log.log([], "v1") == []


def test_feedback_without_a_logged_text_needs_the_routed_text_exactly(log):
    (rid,) = log.log([route("my card was declined")], "v1")
    with pytest.raises(UserError, match="send the request's text"):
        log.record_feedback(rid, "card")
    with pytest.raises(UserError, match="not the text that was routed"):
        log.record_feedback(rid, "transfer", text="my card was declined ")  # no trimming: exact match
    row = log.record_feedback(rid, "transfer", text="my card was declined")
    assert row["request_id"] == rid and row["label"] == "transfer" and row["predicted_label"] == "card"
    assert row["model_version"] == "v1"
    again = log.record_feedback(rid, LABEL_OUT_OF_SCOPE)  # latest wins; the text sent before is kept
    assert again["label"] == LABEL_OUT_OF_SCOPE
    assert log.labelled() == [FeedbackExample(rid, "my card was declined", LABEL_OUT_OF_SCOPE, again["ts"],
                                              "prediction_log")]
    assert log.counts() == {"predictions": 1, "feedback": 1}


def test_stored_texts_make_the_text_optional_and_labelled_lists_only_rows_with_text(backend):
    clock = Clock()
    with backend.open("a", store_text=True, source="support", clock=clock) as log:
        first, second = log.log([route("lost my card"), route("send money")], "v1")
        log.record_feedback(first, "card_lost")
        clock.t += 10
        log.record_feedback(second, "transfer", text="send money")
        examples = log.labelled()
        assert [(e.id, e.text, e.label, e.source) for e in examples] == [
            (first, "lost my card", "card_lost", "support"), (second, "send money", "transfer", "support")]
        assert [e.id for e in log.labelled(since=clock.t)] == [second]
        with pytest.raises(UserError, match="not the text that was routed"):
            log.record_feedback(first, "card", text="something else")
    with backend.open("b") as private:
        (rid,) = private.log([route("lost my card")], "v1")
        private.log([route("no feedback here")], "v1")
        assert private.labelled() == []


def test_unlabelled_leaves_out_labelled_requests_and_their_texts_logged_again(log):
    first, again, other = log.log([route("lost my card"), route("lost my card"), route("send money", "transfer", 0.4)], "v1")
    assert [r["request_id"] for r in log.unlabelled()] == [first, again, other]
    log.record_feedback(first, "card_lost", text="lost my card")
    (row,) = log.unlabelled()  # the same text under another request id is labelled too
    assert row == {"request_id": other, "ts": row["ts"], "model_version": "v1", "label": "transfer", "confidence": 0.4,
                   "text_sha256": hashlib.sha256(b"send money").hexdigest(), "text": None}


def test_unknown_and_malformed_request_ids_are_user_errors(log):
    with pytest.raises(UnknownRequestId, match="unknown request_id"):
        log.record_feedback("0" * 32, "card", text="x")
    assert issubclass(UnknownRequestId, UserError)
    for bad in ("../etc", "x" * 65, "", 12, None, "ab cd", "é"):
        with pytest.raises(UserError, match="not an id this log issues"):
            log.record_feedback(bad, "card", text="x")


def test_hostile_labels_and_values_are_refused_and_nothing_of_the_batch_is_written(log):
    with pytest.raises(UserError, match=f"at most {MAX_LABEL_CHARS}"):
        log.log([route("ok", "x" * (MAX_LABEL_CHARS + 1))], "v1")
    with pytest.raises(UserError, match="lone UTF-16 surrogate"):
        log.log([route("ok", "card\ud800")], "v1")
    with pytest.raises(UserError, match="finite number"):
        log.log([route("fine"), route("bad", confidence=float("nan"))], "v1")
    with pytest.raises(UserError, match="finite number"):
        log.log([route("bad", confidence="0.9")], "v1")
    with pytest.raises(UserError, match="a mapping"):
        log.log(["just a string"], "v1")
    with pytest.raises(UserError, match="no 'label'"):
        log.log([{"text": "x", "confidence": 0.5}], "v1")
    with pytest.raises(UserError, match=f"at most {MAX_TEXT_CHARS}"):
        log.log([route("y" * (MAX_TEXT_CHARS + 1))], "v1")
    with pytest.raises(UserError, match="model_version is empty"):
        log.log([route("fine")], " ")
    with pytest.raises(UserError, match="same request_id twice"):
        log.log([route("a") | {"request_id": "r1"}, route("b") | {"request_id": "r1"}], "v1")
    assert log.counts() == {"predictions": 0, "feedback": 0}
    (rid,) = log.log([route("fine") | {"request_id": "r1"}], "v1")
    with pytest.raises(UserError, match="already logged"):
        log.log([route("again") | {"request_id": "r1"}], "v1")
    for label, match in (("", "empty"), ("z" * 10_000, "at most"), ("bad\udfff", "surrogate"), (["card"], "string")):
        with pytest.raises(UserError, match=match):
            log.record_feedback(rid, label, text="fine")
    assert log.counts() == {"predictions": 1, "feedback": 0}


def test_any_unicode_text_round_trips_and_lone_surrogates_are_escaped(backend):
    with backend.open("p", store_text=True) as log:
        texts = ["emoji 💳 and NUL \x00 inside", "RTL \u202e text", "lone \ud800 surrogate"]
        ids = log.log([route(t) for t in texts], "v1")
        for rid, text in zip(ids, texts):
            log.record_feedback(rid, "card", text=text)  # the surrogate text matches its own hash
        stored = {e.id: e.text for e in log.labelled()}
        # PostgreSQL text cannot hold NUL: it is kept escaped, as lone surrogates are
        nul = "\x00" if backend.kind == "sqlite" else "\\x00"
        assert stored[ids[0]] == f"emoji 💳 and NUL {nul} inside" and stored[ids[1]] == texts[1]
        assert stored[ids[2]] == "lone \\ud800 surrogate"
    with backend.open("q") as private:  # the text sent with the feedback is escaped the same way
        (rid,) = private.log([route("lone \udc80 low")], "v1")
        private.record_feedback(rid, "card", text="lone \udc80 low")
        assert private.labelled()[0].text == "lone \\udc80 low"
        (nul_id,) = private.log([route("NUL \x00 sent")], "v1")
        private.record_feedback(nul_id, "card", text="NUL \x00 sent")
        assert private.labelled()[1].text == f"NUL {nul} sent"


def test_retention_drops_old_rows_with_their_feedback_and_keeps_labelled_rows_past_max_rows(backend):
    clock = Clock()
    with backend.open("r", max_rows=5, max_age_days=1, prune_every=1, clock=clock) as log:
        ids = [log.log([route(f"text {i}")], "v1")[0] for i in range(5)]
        log.record_feedback(ids[0], "card", text="text 0")
        ids += [log.log([route(f"text {i}")], "v1")[0] for i in range(5, 9)]
        remaining = [r[0] for r in backend.rows(log, "SELECT request_id FROM predictions ORDER BY ts, ORDER_SEQ")]
        assert remaining == [ids[0]] + ids[5:]  # the oldest unlabelled rows went, the labelled one stayed
        clock.t += 2 * 86400
        new = log.log([route("fresh")], "v1")
        assert log.counts() == {"predictions": 1, "feedback": 0}  # age wins, feedback goes with its row
        assert log.window_stats()["n"] == 1
        with pytest.raises(UnknownRequestId):
            log.record_feedback(ids[0], "card", text="text 0")
    with backend.open("r", max_age_days=None) as reopened:
        assert reopened.counts()["predictions"] == 1 and new[0] in [e[0] for e in backend.rows(
            reopened, "SELECT request_id FROM predictions")]


def test_the_log_is_wal_with_full_sync_and_survives_reopening(tmp_path):
    path = tmp_path / "d.db"
    log = PredictionLog(path)
    (rid,) = log.log([route("my card was declined")], "v1")
    assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    log.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with PredictionLog(path) as again:
        assert again.record_feedback(rid, "card", text="my card was declined")["label"] == "card"


def test_a_file_that_is_not_a_database_is_a_user_error(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a usable prediction log"):
        PredictionLog(tmp_path / "junk.db")
    with pytest.raises(UserError, match="max_rows"):
        PredictionLog(tmp_path / "x.db", max_rows=0)


def test_two_threads_log_and_label_at_once_without_losing_a_row(backend):
    """One writer per thread, each through its own connection to the same log (two replicas, for
    PostgreSQL), plus a thread sharing the first connection to read windows: every acknowledged row
    is there afterwards, and each log labels the other's requests."""
    errors = []
    first, second = backend.open("c", store_text=True), backend.open("c", store_text=True)

    def work(log, name):
        try:
            for b in range(30):
                ids = log.log([route(f"{name} {b} {i}") for i in range(4)], name)
                log.record_feedback(ids[0], "card")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def read():
        try:
            for _ in range(30):
                first.window_stats(model_version="a")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(first, "a")), threading.Thread(target=work, args=(second, "b")),
               threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert first.counts() == {"predictions": 240, "feedback": 60}
    assert first.model_versions() == {"a": 120, "b": 120} and len(second.labelled()) == 60
    (theirs,) = second.log([route("routed by the second")], "b")
    assert first.record_feedback(theirs, "transfer")["predicted_label"] == "card"  # the shared table
    assert second.counts()["feedback"] == 61
    first.close()
    second.close()


def _older_log(backend):
    """A log with the schema from before set_confidence, holding one row."""
    target = backend.target("old")
    if backend.server is None:
        db = sqlite3.connect(target)
        db.executescript("""CREATE TABLE predictions(request_id TEXT PRIMARY KEY, ts REAL NOT NULL,
            model_version TEXT NOT NULL, label TEXT NOT NULL, confidence REAL NOT NULL, in_scope_score REAL,
            fallback_reason TEXT, text_sha256 TEXT NOT NULL, text TEXT);
            INSERT INTO predictions VALUES ('a1', 1.0, 'v1', 'card', 0.8, NULL, NULL, 'x', NULL);""")
        db.commit()
        db.close()
        return target
    import psycopg

    with psycopg.connect(target, autocommit=True) as db:
        db.execute("""CREATE TABLE predictions (request_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,
            model_version TEXT NOT NULL, label TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL,
            in_scope_score DOUBLE PRECISION, fallback_reason TEXT, text_sha256 TEXT NOT NULL, text TEXT,
            seq BIGINT GENERATED ALWAYS AS IDENTITY)""")
        db.execute("INSERT INTO predictions (request_id, ts, model_version, label, confidence, text_sha256) "
                   "VALUES ('a1', 1.0, 'v1', 'card', 0.8, 'x')")
    return target


def test_a_multi_label_route_logs_its_set_confidence_and_an_older_log_gains_the_column(backend):
    with open_prediction_log(_older_log(backend), max_age_days=None) as log:
        log.log([{"text": "lost card and a refund", "label": "card", "confidence": 0.9, "set_confidence": 0.61}], "v1")
        assert log.window_stats(model_version="v1")["set_confidence"] == [None, 0.61]
        with pytest.raises(UserError, match="set_confidence"):
            log.log([{"text": "t", "label": "card", "confidence": 0.9, "set_confidence": "high"}], "v1")
        assert log.window_stats()["n"] == 2  # the bad batch wrote nothing
