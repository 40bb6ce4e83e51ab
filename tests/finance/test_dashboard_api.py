"""The dashboard's JSON API over a real monitor database (TestClient): incidents and severity,
drill-down, labels and verdicts stored durably, hostile input -> 4xx, auth, read-only reads;
the feedback store and model versions on scores; the incident grouping by hand."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from core.foundation.errors import UserError
from solutions.finance.monitor.incidents import alert_severity, group_incidents, incident_severity, magnitude
from tests.finance.conftest import HOSTILE_TEXT, demo_stream_dir

pytest.importorskip("fastapi", reason="the dashboard needs the serve extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from solutions.finance.dashboard import DashboardAccess, MonitorReader, create_app  # noqa: E402
from solutions.finance.monitor.feedback import MonitorFeedback, UnknownId  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def db(dashboard_db, tmp_path):
    """A private copy of the session's monitor database (tests write labels into it)."""
    copy = tmp_path / "monitor.db"
    shutil.copy(dashboard_db, copy)
    return copy


@pytest.fixture
def client(db):
    with TestClient(create_app(db, access=DashboardAccess(token=TOKEN))) as c:
        c.headers.update(AUTH)
        yield c


def _alert_id(db, entity: str, rule: str) -> int:
    return sqlite3.connect(db).execute("SELECT id FROM alerts WHERE entity=? AND rule=? ORDER BY window_start",
                                       (entity, rule)).fetchone()[0]


# --- incidents and severity, by hand

def _alert(i, start, rule="negative_share_spike", value=0.5, baseline=0.2, entity="ACME", size=3600):
    return {"id": i, "entity": entity, "rule": rule, "window_start": start, "window_end": start + size,
            "value": value, "baseline": baseline}


def test_touching_windows_chain_into_one_incident_and_a_gap_splits_them():
    alerts = [_alert(1, 0), _alert(2, 3600, "volume_spike", 9.0, 1.0), _alert(3, 3 * 3600),
              _alert(4, 0, entity="BRDG", value=0.3, baseline=0.2)]
    incidents = group_incidents(alerts, 3600)
    acme = sorted((i for i in incidents if i["entity"] == "ACME"), key=lambda i: i["start"])
    assert [(i["id"], i["start"], i["end"], i["windows"]) for i in acme] == [(1, 0, 7200, 2), (3, 10800, 14400, 1)]
    assert acme[0]["rules"] == ["negative_share_spike", "volume_spike"]
    assert [i["entity"] for i in incidents if i["entity"] == "BRDG"] == ["BRDG"]
    assert "severity" not in alerts[0]  # the caller's dicts are not changed


def test_severity_bands_follow_rule_and_magnitude():
    assert magnitude("negative_share_spike", 0.7, 0.2) == pytest.approx(0.5)
    assert magnitude("sentiment_drop", -0.6, 0.2) == pytest.approx(0.8)
    assert magnitude("volume_spike", 10.0, 0.1) == pytest.approx(10.0 / 0.5)  # baseline floored at 0.5
    assert alert_severity("negative_share_spike", 0.7, 0.2) == "high"  # 0.50 >= 0.45
    assert alert_severity("negative_share_spike", 0.5, 0.2) == "medium"  # 0.30 >= 0.25
    assert alert_severity("negative_share_spike", 0.4, 0.2) == "low"
    assert alert_severity("sentiment_drop", -0.6, 0.2) == "medium"  # drop 0.8
    assert alert_severity("volume_spike", 100.0, 0.1) == "medium"  # volume alone is never high
    assert incident_severity([_alert(1, 0, value=0.4)], 3600) == "low"
    assert incident_severity([_alert(1, 0, value=0.4), _alert(2, 0, "volume_spike", 2.0, 1.0)], 3600) == "medium"
    assert incident_severity([_alert(i, i * 3600, value=0.4) for i in range(3)], 3600) == "medium"  # 3 windows
    assert incident_severity([_alert(1, 0, value=0.7), _alert(2, 0, "volume_spike", 2.0, 1.0)], 3600) == "high"


def test_incidents_come_most_severe_first_with_filters(client):
    data = client.get("/api/incidents").json()
    assert [(i["entity"], i["severity"]) for i in data["incidents"]] == [("BRDG", "high"), ("HALO", "high"),
                                                                          ("ORBT", "medium")]
    brdg = data["incidents"][0]
    assert brdg["windows"] == 3 and brdg["status"] == "open" and len(brdg["alerts"]) == 5
    assert [i["entity"] for i in client.get("/api/incidents?min_severity=high").json()["incidents"]] == ["BRDG", "HALO"]
    assert [i["entity"] for i in client.get("/api/incidents?entity=orb").json()["incidents"]] == ["ORBT"]
    assert client.get("/api/incidents?entity=zzz").json()["matching"] == 0


def test_entity_drill_down_and_evidence_carry_source_score_label_and_model(client, db):
    entity = client.get("/api/entity", params={"name": "BRDG"}).json()
    starts = [w["start"] for w in entity["windows"]]
    assert starts == sorted(starts) and entity["window"] == 3600 and len(entity["incidents"]) == 1
    alert_id = _alert_id(db, "BRDG", "negative_share_spike")
    docs = client.get("/api/documents", params={"alert_id": alert_id}).json()["documents"]
    evidence = json.loads(sqlite3.connect(db).execute("SELECT evidence FROM alerts WHERE id=?",
                                                      (alert_id,)).fetchone()[0])
    assert [d["id"] for d in docs] == evidence  # in the alert's order
    assert all(d["label"] == "negative" and d["model"] == "keyword-stub@test" and d["source"] for d in docs)
    assert docs[0]["score"] == pytest.approx(0.05 - 0.8)
    window = client.get("/api/documents", params={"entity": "BRDG", "window_start": 1773147600}).json()["documents"]
    assert {d["id"] for d in evidence_docs(docs)} <= {d["id"] for d in window}
    html = client.get("/api/documents", params={"entity": "ACME", "limit": 200}).json()["documents"]
    assert HOSTILE_TEXT in [d["text"] for d in html]  # stored and served as the text it is


def evidence_docs(docs):
    return [d for d in docs if d["label"] == "negative"]


def test_a_label_is_stored_durably_with_the_model_it_corrects(client, db):
    doc_id = client.get("/api/documents", params={"alert_id": _alert_id(db, "BRDG", "negative_share_spike")}
                        ).json()["documents"][0]["id"]
    first = client.post("/api/labels", json={"doc_id": doc_id, "label": "neutral", "analyst": "ann"})
    assert first.status_code == 200
    assert first.json()["previous_label"] == "negative" and first.json()["model_version"] == "keyword-stub@test"
    again = client.post("/api/labels", json={"doc_id": doc_id, "label": "positive"}).json()
    assert again["previous_label"] == "neutral" and again["analyst"] == "analyst"  # the latest word wins
    row = sqlite3.connect(db).execute("SELECT label, analyst, previous_label, model_version FROM document_labels "
                                      "WHERE doc_id=?", (doc_id,)).fetchone()
    assert row == ("positive", "analyst", "neutral", "keyword-stub@test")
    shown = client.get("/api/documents", params={"alert_id": _alert_id(db, "BRDG", "negative_share_spike")}
                       ).json()["documents"][0]
    assert shown["analyst_label"] == "positive" and shown["label"] == "negative"  # the model's stays


def test_an_alert_verdict_is_stored_and_changes_the_incident_status(client, db):
    alert_id = _alert_id(db, "ORBT", "volume_spike")
    stored = client.post("/api/verdicts", json={"alert_id": alert_id, "verdict": "false_alarm",
                                                "note": "investor call schedule\nnot news"})
    assert stored.status_code == 200 and stored.json()["note"] == "investor call schedule\nnot news"
    orbt = client.get("/api/incidents?entity=ORBT").json()["incidents"][0]
    assert orbt["status"] == "false_alarm" and orbt["alerts"][0]["verdict"] == "false_alarm"
    assert [i["entity"] for i in client.get("/api/incidents?status=open").json()["incidents"]] == ["BRDG", "HALO"]
    assert sqlite3.connect(db).execute("SELECT verdict FROM alert_verdicts").fetchall() == [("false_alarm",)]


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/labels", {"doc_id": "nope", "label": "neutral"}, 404, "no document with id 'nope'"),
    ("/api/labels", {"doc_id": "n0001", "label": "bullish"}, 422, "not a sentiment label"),
    ("/api/labels", {"doc_id": "n0001", "label": 1}, 422, "label"),
    ("/api/labels", {"doc_id": "n0001", "label": "neutral", "extra": 1}, 422, "extra"),
    ("/api/labels", {"doc_id": "x" * 600, "label": "neutral"}, 422, "doc_id"),
    ("/api/labels", {"doc_id": "n0001", "label": "neutral", "analyst": " \u200b "}, 422, "analyst"),
    ("/api/labels", {"doc_id": "n0001", "label": "neutral", "analyst": "a\u0007b"}, 422, "analyst"),
    ("/api/labels", ["n0001", "neutral"], 422, "body"),
    ("/api/verdicts", {"alert_id": 999999, "verdict": "confirmed"}, 404, "no alert with id 999999"),
    ("/api/verdicts", {"alert_id": "1", "verdict": "confirmed"}, 422, "alert_id"),
    ("/api/verdicts", {"alert_id": True, "verdict": "confirmed"}, 422, "alert_id"),
    ("/api/verdicts", {"alert_id": 0, "verdict": "confirmed"}, 422, "alert_id"),
    ("/api/verdicts", {"alert_id": 1, "verdict": "maybe"}, 422, "verdict"),
    ("/api/verdicts", {"alert_id": 1, "verdict": "confirmed", "note": "n" * 1001}, 422, "note"),
    ("/api/verdicts", {"alert_id": 1, "verdict": "confirmed", "note": "bell\u0007"}, 422, "control characters"),
])
def test_hostile_or_wrong_bodies_get_a_4xx_that_names_the_problem(client, db, path, body, status, message):
    response = client.post(path, json=body)
    assert response.status_code == status and message in response.json()["error"], response.json()
    assert sqlite3.connect(db).execute("SELECT (SELECT COUNT(*) FROM document_labels) + "
                                       "(SELECT COUNT(*) FROM alert_verdicts)").fetchone()[0] == 0


def test_malformed_bytes_are_refused_by_the_guard(client):
    raw = lambda body, kind="application/json": client.post("/api/labels", content=body,  # noqa: E731
                                                            headers={"Content-Type": kind})
    assert raw(b'{"doc_id": "n0001", "label": "neutral"}', "text/plain").status_code == 415
    assert raw(b"{not json").status_code == 400
    assert raw(b'{"doc_id": "\\ud800", "label": "neutral"}').status_code == 400  # lone surrogate
    assert raw(b"[" * 100 + b"]" * 100).status_code == 400  # nested too deep
    assert raw(b"\xff\xfe").status_code == 400
    assert raw(b'{"doc_id": "' + b"x" * 1_100_000 + b'"}').status_code == 413


@pytest.mark.parametrize("query, status", [
    ("/api/entity?name=NOPE", 404), ("/api/entity?name=" + "x" * 600, 422), ("/api/entity", 422),
    ("/api/entity?name=x%27%20OR%201%3D1%20--", 404), ("/api/documents", 422), ("/api/documents?alert_id=abc", 422),
    ("/api/documents?alert_id=999999", 404), ("/api/documents?entity=BRDG&limit=100000", 422),
    ("/api/documents?entity=BRDG&window_start=1e99", 422), ("/api/incidents?min_severity=huge", 422),
    ("/api/incidents?limit=0", 422), ("/api/incidents?status=%00", 422),
])
def test_hostile_queries_get_a_4xx(client, query, status):
    response = client.get(query)
    assert response.status_code == status and "error" in response.json()


def test_the_page_is_public_but_the_api_needs_the_token(db):
    with TestClient(create_app(db, access=DashboardAccess(token=TOKEN))) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.text.startswith("<!DOCTYPE html>")
        policy = page.headers["content-security-policy"]
        assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy and "connect-src 'self'" in policy
        assert "<script src" not in page.text and "http" not in page.text.split("<script>")[1].replace(
            "http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
        for path in ("/api/state", "/api/incidents", "/api/entity?name=BRDG", "/api/documents?entity=BRDG"):
            assert anonymous.get(path).status_code == 401
        assert anonymous.post("/api/labels", json={"doc_id": "n0001", "label": "neutral"}).status_code == 401
        assert anonymous.get("/api/state", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get("/api/state", headers=AUTH).status_code == 200
        assert anonymous.get("/healthz").status_code == 200


def test_state_changes_when_a_label_is_stored(client):
    before = client.get("/api/state").json()
    assert before["documents"] == 411 and before["alerts"] == 9 and before["labels"] == 0
    client.post("/api/labels", json={"doc_id": "n0001", "label": "positive"})
    after = client.get("/api/state").json()
    assert after["labels"] == 1 and after["state"] != before["state"]


# --- reads never block the monitor; the database may vanish

def test_reads_are_read_only_and_do_not_block_the_monitor_writing(db):
    from solutions.finance.monitor.store import Record, Store

    MonitorFeedback(db).close()  # the label tables, as create_app makes them
    reader = MonitorReader(db)
    connection = reader._connect()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connection.execute("INSERT INTO meta VALUES ('x', 'y')")
    connection.execute("BEGIN")
    assert connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 411  # a snapshot is held open
    store = Store(db, 3600)
    store.db.execute("PRAGMA busy_timeout=100")  # a blocked writer would fail fast here
    record = Record({"id": "new1", "ts": 1773400000.0, "ts_text": "t", "text": "Acme Corp news", "source": None,
                     "origin": "o"}, {"doc_id": "new1", "p_negative": 0.1, "p_neutral": 0.8, "p_positive": 0.1,
                                      "score": 0.0, "label": "neutral", "model": "m2"}, ("ACME",), 0, "line")
    store.commit_batch(source_key="k", offset=1, records=[record], quarantined=[])
    assert connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 411  # still its snapshot
    connection.close()
    store.close()
    assert reader.state()["documents"] == 412


def test_a_vanished_database_answers_503(db, tmp_path):
    with TestClient(create_app(db)) as c:
        db.rename(tmp_path / "moved.db")
        response = c.get("/api/state")
        assert response.status_code == 503 and "unavailable" in response.json()["error"]


def test_the_dashboard_refuses_a_missing_or_foreign_database(tmp_path):
    with pytest.raises(UserError, match="monitor database not found"):
        create_app(tmp_path / "none.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="not a finance monitor database"):
        create_app(other)
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a monitor database"):
        create_app(tmp_path / "junk.db")


# --- the feedback store itself, and labelled documents for retraining

def test_labels_survive_reopening_and_become_feedback_examples(db):
    from solutions.finance.monitor.feedback import labelled_documents

    feedback = MonitorFeedback(db)
    feedback.label_document("html1", "neutral", analyst="ann")
    feedback.label_document("n0001", "positive")
    with pytest.raises(UnknownId):
        feedback.label_document("missing", "neutral")
    feedback.close()
    examples = labelled_documents(db)
    assert [(e.id, e.label, e.source) for e in examples] == [("html1", "neutral", "finance"),
                                                             ("n0001", "positive", "finance")]
    assert examples[0].text == HOSTILE_TEXT
    assert labelled_documents(db, since=examples[1].ts) == examples[1:]


def test_labelled_documents_of_a_database_nobody_labelled_is_empty(dashboard_db):
    from solutions.finance.monitor.feedback import labelled_documents

    assert labelled_documents(dashboard_db) == []  # read-only: the session database has no label tables


# --- model versions on scores

def test_an_older_database_gains_the_model_column_and_new_scores_name_their_model(tmp_path, keyword_model):
    from solutions.finance.monitor.loop import MonitorConfig, run_monitor
    from solutions.finance.monitor.store import Store

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE documents (id TEXT PRIMARY KEY, ts REAL NOT NULL, ts_text TEXT NOT NULL, "
                      "text TEXT NOT NULL, source TEXT, origin TEXT NOT NULL, ingested_at REAL NOT NULL, "
                      "late INTEGER NOT NULL DEFAULT 0); CREATE TABLE scores (doc_id TEXT PRIMARY KEY, "
                      "p_negative REAL NOT NULL, p_neutral REAL NOT NULL, p_positive REAL NOT NULL, "
                      "score REAL NOT NULL, label TEXT NOT NULL); INSERT INTO documents VALUES "
                      "('old1', 1.0, 't', 'Acme Corp', NULL, 'o', 1.0, 0); "
                      "INSERT INTO scores VALUES ('old1', 0.1, 0.8, 0.1, 0.0, 'neutral');")
    old.close()
    Store(path, 3600).close()
    assert "model" in {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(scores)")}
    keyword_model.model_version = "kw@1"
    run_monitor(MonitorConfig(inputs=(str(demo_stream_dir() / "stream.jsonl"),), db=path, model="unused",
                              sinks=(), drain_seconds=0), model=keyword_model)
    models = dict(sqlite3.connect(path).execute("SELECT model, COUNT(*) FROM scores GROUP BY model"))
    assert models == {None: 1, "kw@1": 394}


def test_model_version_names_the_run_and_hashes_its_weights(tmp_path):
    from solutions.finance.monitor.loop import model_version

    run = tmp_path / "finance-run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "classifier.json").write_text("{}")
    (run / "model" / "head.safetensors").write_bytes(b"weights-1")
    (run / "model" / "model.onnx").write_bytes(b"export")
    first = model_version(str(run), object())
    assert first.startswith("finance-run@") and len(first) == len("finance-run@") + 12
    (run / "model" / "model.onnx").write_bytes(b"another export")
    assert model_version(str(run / "model"), object()) == first  # exports do not count; model/ names the run
    (run / "model" / "head.safetensors").write_bytes(b"weights-2")
    assert model_version(str(run), object()) != first
    assert model_version(str(run), object(), "onnx-int8").endswith("/onnx-int8")
    assert model_version("zeroshot", object()) == "zeroshot"


def test_dashboard_command_on_a_missing_database_says_how_to_make_one(tmp_path, capsys):
    from verticals.cli import main

    assert main(["finance", "dashboard", str(tmp_path / "none.db")]) == 2
    assert "verticals finance monitor" in capsys.readouterr().err
    assert main(["finance", "dashboard", str(tmp_path / "none.db"), "--poll-seconds", "0"]) == 2
    assert "poll_seconds must be between" in capsys.readouterr().err
