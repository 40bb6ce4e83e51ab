"""Per-company scores in the monitor's SQLite store: an older database (before per-company scores)
is migrated on open without losing a row, its rows keep the document's score, new rows carry the
company's own; the dashboard's documents API shows both, with evidence offsets the page can use."""

from __future__ import annotations

import json
import sqlite3

import pytest

from solutions.finance.monitor.store import Record, Store

# The tables as the monitor wrote them before per-company scores (only the ones that changed since).
OLD_SCHEMA = """
CREATE TABLE documents (id TEXT PRIMARY KEY, ts REAL NOT NULL, ts_text TEXT NOT NULL, text TEXT NOT NULL,
    source TEXT, origin TEXT NOT NULL, ingested_at REAL NOT NULL, late INTEGER NOT NULL DEFAULT 0);
CREATE TABLE scores (doc_id TEXT PRIMARY KEY REFERENCES documents(id), p_negative REAL NOT NULL,
    p_neutral REAL NOT NULL, p_positive REAL NOT NULL, score REAL NOT NULL, label TEXT NOT NULL, model TEXT);
CREATE TABLE mentions (doc_id TEXT NOT NULL REFERENCES documents(id), entity TEXT NOT NULL,
    window_start INTEGER NOT NULL, PRIMARY KEY (doc_id, entity));
CREATE TABLE alerts (id INTEGER PRIMARY KEY, entity TEXT NOT NULL, rule TEXT NOT NULL, window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL, value REAL NOT NULL, baseline REAL NOT NULL, detail TEXT NOT NULL,
    evidence TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (entity, rule, window_start));
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('window', '3600');
INSERT INTO documents VALUES ('old', 7300, 't', '$ACME falls. $NOVA wins.', NULL, 'f', 0, 0);
INSERT INTO scores VALUES ('old', 0.7, 0.2, 0.1, -0.6, 'negative', 'v1');
INSERT INTO mentions VALUES ('old', 'ACME', 7200), ('old', 'NOVA', 7200);
"""
TEXT = "\U0001F680 Big day. $ACME wins a record order. $NOVA falls."  # an emoji: UTF-16 offsets differ


def _new_record() -> Record:
    start = TEXT.index("$ACME")
    end = TEXT.index(" $NOVA")
    evidence = json.dumps([{"text": TEXT[start:end], "start": start, "end": end, "label": "positive", "score": 0.75}])
    own = {"p_negative": 0.05, "p_neutral": 0.15, "p_positive": 0.8, "score": 0.75, "label": "positive",
           "sentences": 1, "evidence": evidence}
    doc = {"id": "new", "ts": 7400.0, "ts_text": "t", "text": TEXT, "source": None, "origin": "f"}
    score = {"doc_id": "new", "p_negative": 0.4, "p_neutral": 0.3, "p_positive": 0.3, "score": -0.1,
             "label": "negative", "model": "v2", "sentences": 3, "sentences_dropped": 0, "evidence": "[]"}
    return Record(doc, score, ("ACME", "NOVA"), 0, "line", {"ACME": own})  # NOVA: no own row -> NULLs


def _old_db(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    return path


def test_an_older_database_is_migrated_on_open_and_keeps_every_row(tmp_path):
    path = _old_db(tmp_path)
    store = Store(path, 3600)
    assert store.db.execute("SELECT COUNT(*) FROM mentions").fetchone()[0] == 2
    assert store.db.execute("SELECT label, sentences FROM mentions WHERE entity='ACME'").fetchone() == (None, None)
    assert store.window_scores("ACME", 0) == {7200: ([-0.6], ["negative"])}  # the document's score stands in
    store.commit_batch(source_key="f", offset=10, records=[_new_record()], quarantined=[])
    assert store.window_scores("ACME", 0) == {7200: ([0.75, -0.6], ["positive", "negative"])}  # by doc id: new, old
    assert store.window_scores("NOVA", 0) == {7200: ([-0.1, -0.6], ["negative", "negative"])}  # by doc id: new, old
    assert store.evidence("ACME", 7200, "negative") == ["old"]
    (old, new) = store.evidence_sentences("ACME", ["old", "new"])
    assert old == {"doc_id": "old", "label": "negative", "score": -0.6, "sentences": 0, "evidence": []}
    assert new["label"] == "positive" and new["evidence"][0]["text"] == "$ACME wins a record order."
    store.close()
    again = Store(path, 3600)  # opening a migrated database again changes nothing
    assert again.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 2
    again.close()


def test_the_dashboard_reads_an_old_database_unmigrated_and_a_new_one_with_evidence(tmp_path):
    pytest.importorskip("fastapi", reason="the dashboard needs the serve extra: pip install -e '.[serve]'")
    from solutions.finance.dashboard import MonitorReader
    from solutions.finance.monitor.feedback import MonitorFeedback

    path = _old_db(tmp_path)
    MonitorFeedback(path).close()  # the label tables the dashboard needs (it never migrates the monitor's)
    (old,) = MonitorReader(path).documents(entity="ACME")["documents"]
    assert (old["label"], old["evidence"], old["entity_sentences"]) == ("negative", [], None)
    Store(path, 3600).commit_batch(source_key="f", offset=10, records=[_new_record()], quarantined=[])
    docs = {d["id"]: d for d in MonitorReader(path).documents(entity="ACME")["documents"]}
    new = docs["new"]
    assert (new["label"], new["score"], new["document_label"], new["entity_sentences"]) == ("positive", 0.75,
                                                                                            "negative", 1)
    (evidence,) = new["evidence"]
    a, b = evidence["span16"]
    assert (a, b) == (evidence["start"] + 1, evidence["end"] + 1)  # the emoji is two UTF-16 code units
    assert TEXT.encode("utf-16-le")[2 * a:2 * b].decode("utf-16-le") == evidence["text"]
    nova = MonitorReader(path).documents(entity="NOVA", window_start=7200)["documents"]
    assert [(d["id"], d["label"], d["entity_sentences"]) for d in nova] == [("old", "negative", None),
                                                                           ("new", "negative", None)]  # P(neg) first
