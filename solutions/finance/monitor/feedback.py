"""What analysts tell the monitor: a document's right sentiment, an alert's verdict.

Two tables in the monitor's own SQLite file, created on open by this module's connection (the
monitor's store never reads them):

    document_labels(doc_id PK -> documents, label, analyst, ts, previous_label, model_version)
    alert_verdicts(alert_id PK -> alerts, verdict 'false_alarm'|'confirmed', analyst, note, ts)

One row per document / alert: labelling again overwrites (the latest word wins). `previous_label`
is the label the analyst saw and replaced: their own earlier label if there was one, else the
model's; `model_version` is the version that scored the document (scores.model; NULL for scores
written before versions were stored). Each action is one `BEGIN IMMEDIATE` transaction on a WAL
database with synchronous=FULL: once a call returns, the label survives a crash; the monitor's
writes wait at most for that one small transaction (its connection has a 30 s busy timeout).

Validation: the id must be stored (`UnknownId`, a UserError the dashboard answers with 404), the
label one of the sentiment model's labels, the verdict one of VERDICTS, the analyst name 1-100
visible characters and the note at most MAX_NOTE_CHARS (newlines and tabs allowed, no other
control characters, no lone surrogates).

`labelled_documents(db_path)` turns the labels into `core.mlops.feedback.FeedbackExample`s (text from
the documents table) for `verticals retrain`; it opens the file read-only.
Leaves out: who the analyst is (the dashboard has one shared token; the name is what they typed),
label history beyond the previous label, and alert verdicts as training data (a false alarm says
the rule fired wrongly, not which document's sentiment was wrong).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from core.foundation.durable import open_sqlite, transaction
from core.foundation.errors import UserError
from core.foundation.text import encodable, has_visible_text
from core.mlops.feedback import FeedbackExample
from solutions.finance.sentiment import SENTIMENT_LABELS

SCHEMA = """
CREATE TABLE IF NOT EXISTS document_labels (
    doc_id TEXT PRIMARY KEY REFERENCES documents(id), label TEXT NOT NULL, analyst TEXT NOT NULL,
    ts REAL NOT NULL, previous_label TEXT, model_version TEXT);
CREATE TABLE IF NOT EXISTS alert_verdicts (
    alert_id INTEGER PRIMARY KEY REFERENCES alerts(id), verdict TEXT NOT NULL, analyst TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '', ts REAL NOT NULL);
"""
VERDICTS = ("false_alarm", "confirmed")
MAX_NOTE_CHARS = 1000
MAX_ANALYST_CHARS = 100
MAX_DOC_ID_CHARS = 512  # as the monitor's sources allow
DEFAULT_ANALYST = "analyst"


class UnknownId(UserError):
    """A document or alert id the monitor database does not hold."""


def _check_analyst(analyst: str) -> str:
    if not isinstance(analyst, str) or not encodable(analyst) or not has_visible_text(analyst):
        raise UserError("analyst: give a name with at least one visible character")
    analyst = analyst.strip()
    if len(analyst) > MAX_ANALYST_CHARS or any(ord(ch) < 32 or ord(ch) == 127 for ch in analyst):
        raise UserError(f"analyst: at most {MAX_ANALYST_CHARS} characters, on one line")
    return analyst


def _check_note(note: str) -> str:
    if not isinstance(note, str) or not encodable(note):
        raise UserError("note: must be valid Unicode text")
    if len(note) > MAX_NOTE_CHARS:
        raise UserError(f"note: {len(note)} characters; at most {MAX_NOTE_CHARS}")
    if any((ord(ch) < 32 and ch not in "\n\t") or ord(ch) == 127 for ch in note):
        raise UserError("note: control characters are not allowed (newlines and tabs are)")
    return note.strip()


def has_model_column(db: sqlite3.Connection) -> bool:
    """Whether scores has its `model` column (the monitor's store adds it to older databases on open)."""
    return "model" in {row[1] for row in db.execute("PRAGMA table_info(scores)")}


class MonitorFeedback:
    """Labels and verdicts in a monitor database (which must exist: the monitor creates it)."""

    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        if not self.path.is_file():
            raise UserError(f"monitor database not found: {self.path}. Run `verticals finance monitor ... "
                            f"--db {self.path}` first.")
        self._lock = threading.Lock()  # one connection, shared by the dashboard's worker threads
        try:
            self.db = open_sqlite(self.path, check_same_thread=False)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"documents", "scores", "alerts"} <= tables:
                raise UserError(f"{self.path} is not a finance monitor database (no documents/scores/alerts "
                                f"tables); give the --db of `verticals finance monitor`")
            self.db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, UserError) as exc:
            if hasattr(self, "db"):  # open_sqlite closes what it opened when it fails itself
                self.db.close()
            if isinstance(exc, UserError):
                raise
            raise UserError(f"{self.path} is not a monitor database ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def label_document(self, doc_id: str, label: str, *, analyst: str = DEFAULT_ANALYST) -> dict:
        """Store the right sentiment of a document; returns the stored row."""
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > MAX_DOC_ID_CHARS or not encodable(doc_id):
            raise UserError(f"doc_id: give a document id (at most {MAX_DOC_ID_CHARS} characters)")
        if label not in SENTIMENT_LABELS:
            raise UserError(f"label {str(label)[:40]!r} is not a sentiment label; choose one of "
                            f"{', '.join(SENTIMENT_LABELS)}")
        analyst = _check_analyst(analyst)
        with self._lock, transaction(self.db):
            model = "s.model" if has_model_column(self.db) else "NULL"  # NULL: a database from before versions
            scored = self.db.execute(f"SELECT s.label, {model} FROM documents d LEFT JOIN scores s ON s.doc_id=d.id "
                                     f"WHERE d.id=?", (doc_id,)).fetchone()
            if scored is None:
                raise UnknownId(f"no document with id {doc_id[:80]!r} in {self.path.name}")
            earlier = self.db.execute("SELECT label FROM document_labels WHERE doc_id=?", (doc_id,)).fetchone()
            row = {"doc_id": doc_id, "label": label, "analyst": analyst, "ts": time.time(),
                   "previous_label": earlier[0] if earlier else scored[0], "model_version": scored[1]}
            self.db.execute("INSERT INTO document_labels VALUES (:doc_id, :label, :analyst, :ts, :previous_label, "
                            ":model_version) ON CONFLICT(doc_id) DO UPDATE SET label=excluded.label, "
                            "analyst=excluded.analyst, ts=excluded.ts, previous_label=excluded.previous_label, "
                            "model_version=excluded.model_version", row)
        return row

    def judge_alert(self, alert_id: int, verdict: str, *, analyst: str = DEFAULT_ANALYST, note: str = "") -> dict:
        """Store an analyst's verdict on an alert (false_alarm | confirmed); returns the stored row."""
        if not isinstance(alert_id, int) or isinstance(alert_id, bool) or not 0 < alert_id < 2**63:
            raise UserError("alert_id: give an alert's integer id")
        if verdict not in VERDICTS:
            raise UserError(f"verdict {str(verdict)[:40]!r} is not one of {', '.join(VERDICTS)}")
        analyst, note = _check_analyst(analyst), _check_note(note)
        with self._lock, transaction(self.db):
            if self.db.execute("SELECT 1 FROM alerts WHERE id=?", (alert_id,)).fetchone() is None:
                raise UnknownId(f"no alert with id {alert_id} in {self.path.name}")
            row = {"alert_id": alert_id, "verdict": verdict, "analyst": analyst, "note": note, "ts": time.time()}
            self.db.execute("INSERT INTO alert_verdicts VALUES (:alert_id, :verdict, :analyst, :note, :ts) "
                            "ON CONFLICT(alert_id) DO UPDATE SET verdict=excluded.verdict, analyst=excluded.analyst, "
                            "note=excluded.note, ts=excluded.ts", row)
        return row


def labelled_documents(db_path: str | Path, *, since: float | None = None) -> list:
    """Every analyst-labelled document as a core.mlops.feedback.FeedbackExample (source="finance"),
    oldest label first; `since`: only labels given at or after this Unix time."""
    path = Path(db_path)
    if not path.is_file():
        raise UserError(f"monitor database not found: {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='document_labels'").fetchone() is None:
            return []  # nobody has labelled anything yet
        rows = db.execute("SELECT l.doc_id, d.text, l.label, l.ts FROM document_labels l JOIN documents d ON "
                          "d.id=l.doc_id WHERE l.ts>=? ORDER BY l.ts, l.doc_id",
                          (-1.0 if since is None else float(since),)).fetchall()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is not a monitor database ({exc})") from None
    finally:
        db.close()
    return [FeedbackExample(id=doc_id, text=text, label=label, ts=ts, source="finance")
            for doc_id, text, label, ts in rows]

