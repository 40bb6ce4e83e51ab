"""`verticals finance dashboard DB`: the analyst's live page over a monitor database.

One FastAPI app on core.serving.app.create_service (bearer token, body limits and JSON checks, 4xx
for bad input, /healthz, /readyz, /metrics) serving one self-contained HTML page
(dashboard.html: vanilla JavaScript that draws its own SVG charts; no CDN, no build step) and a
JSON API the page polls every `poll_seconds`:

    GET  /                       the page (public: it holds no data; every API call needs the token)
    GET  /api/state              counts, stream clock, and a token that changes when anything does
    GET  /api/incidents          alerts grouped per incident with severity (monitor/incidents.py);
                                 ?entity= (substring, any case) &min_severity= &status= &limit=
    GET  /api/entity?name=       an entity's windows (latest MAX_WINDOWS), its alerts and incidents
    GET  /api/documents          ?alert_id= (its evidence) | ?entity= [&window_start=] [&limit=]:
                                 documents with source, the entity's own label and score in
                                 each and the sentences that drove it (offsets into the text,
                                 highlighted on the page), the document's own label and score,
                                 the model version that scored them, and the analyst's label
    POST /api/labels             {"doc_id", "label", "analyst"?} -> the stored label
    POST /api/verdicts           {"alert_id", "verdict": false_alarm|confirmed, "note"?, "analyst"?}

Reads never block the monitor: each request opens its own read-only connection (`mode=ro`) on
the WAL database and reads in one short transaction; writers are never waited for. The labels
go through monitor/feedback.py (one small transaction each). Unknown ids answer 404, bad values
422, a database that cannot be read 503. The page shows every stored text as text (DOM
textContent, never innerHTML), under a Content-Security-Policy that allows only its own inline
script and style (by hash) and calls to its own origin.

The token: a browser cannot attach a bearer header to the page request itself, so `/` is
public and the page asks for the token (or takes it from the URL fragment `#token=...`, which
browsers never send to the server) and keeps it in sessionStorage for its API calls.
Leaves out: user accounts (one shared token; the analyst's name is what they type), TLS (put a
reverse proxy in front), push updates (polling is enough at a few seconds and needs no socket).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from core.foundation.errors import UserError
from core.serving.app import Access, ServiceLimits, create_service
from solutions.finance.monitor.feedback import (
    MAX_ANALYST_CHARS,
    MAX_DOC_ID_CHARS,
    MAX_NOTE_CHARS,
    MonitorFeedback,
    UnknownId,
)
from solutions.finance.monitor.incidents import SEVERITIES, group_incidents

PAGE = Path(__file__).with_name("dashboard.html")
MAX_WINDOWS = 5000  # per entity chart: the latest ones
MAX_DOCUMENTS = 200  # per documents request
MAX_TEXT_CHARS = 2000  # of a document's text in an answer
MAX_QUERY_CHARS = 512  # entity names and filters


@dataclass(frozen=True)
class DashboardAccess(Access):
    """Access, plus the page itself: public (it holds no data; the API it calls needs the token)."""

    def is_public(self, path: str) -> bool:
        return path == "/" or super().is_public(path)


class MonitorReader:
    """Read-only queries on a monitor database; one connection per call, closed after it. The label
    tables must exist (MonitorFeedback creates them; create_app opens one first)."""

    def __init__(self, db_path: Path):
        self.path = Path(db_path)
        self.uri = self.path.resolve().as_uri() + "?mode=ro"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.uri, uri=True, timeout=5, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    def _read(self, fn):
        """Run `fn(db)` in one read transaction (a consistent snapshot); 503 when unreadable."""
        try:
            db = self._connect()
        except sqlite3.DatabaseError as exc:
            raise DatabaseUnavailable(f"cannot open {self.path.name}: {exc}") from None
        try:
            db.execute("BEGIN")
            return fn(db)
        except sqlite3.DatabaseError as exc:
            raise DatabaseUnavailable(f"cannot read {self.path.name}: {exc}") from None
        finally:
            db.close()

    def window(self, db) -> int:
        row = db.execute("SELECT value FROM meta WHERE key='window'").fetchone()
        return int(row[0]) if row else 3600

    def state(self) -> dict:
        def read(db):
            one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
            clock = db.execute("SELECT value FROM meta WHERE key='clock'").fetchone()
            watermark = json.loads(clock[0])[0] if clock else None
            # documents are never deleted and ids are INSERT OR IGNORE: MAX(rowid) is their count, in O(log n)
            parts = {"documents": one("SELECT COALESCE(MAX(rowid), 0) FROM documents"),
                     "alerts": one("SELECT COUNT(*) FROM alerts"),
                     "labels": one("SELECT COUNT(*) FROM document_labels"),
                     "verdicts": one("SELECT COUNT(*) FROM alert_verdicts"),
                     "quarantined": one("SELECT COUNT(*) FROM quarantine")}
            changes = (parts["documents"], one("SELECT MAX(id) FROM alerts"), one("SELECT MAX(rowid) FROM aggregates"),
                       parts["labels"], one("SELECT MAX(ts) FROM document_labels"), parts["verdicts"],
                       one("SELECT MAX(ts) FROM alert_verdicts"))
            finite = watermark is not None and math.isfinite(watermark)  # -inf before the first document
            return parts | {"window": self.window(db), "watermark": watermark if finite else None,
                            "state": hashlib.sha256(repr(changes).encode()).hexdigest()[:16]}
        return self._read(read)

    def alerts(self, db, entity: str | None = None) -> list[dict]:
        where, args = ("WHERE a.entity=?", (entity,)) if entity is not None else ("", ())
        rows = db.execute(f"SELECT a.id, a.entity, a.rule, a.window_start, a.window_end, a.value, a.baseline, "
                          f"a.detail, a.created_at, json_array_length(a.evidence) AS evidence_count, v.verdict, "
                          f"v.analyst AS verdict_analyst, v.note AS verdict_note, v.ts AS verdict_ts FROM alerts a "
                          f"LEFT JOIN alert_verdicts v ON v.alert_id=a.id {where} ORDER BY a.window_start, a.id", args)
        return [dict(r) for r in rows]

    def incidents(self, *, entity: str = "", min_severity: str = "low", status: str = "all",
                  limit: int = 200) -> dict:
        def read(db):
            window = self.window(db)
            every = group_incidents(self.alerts(db), window)
            needle = entity.casefold()
            floor = SEVERITIES.index(min_severity)
            chosen = [i for i in every if needle in i["entity"].casefold() and SEVERITIES.index(i["severity"]) >= floor
                      and (status == "all" or i["status"] == status
                           or (status == "reviewed" and i["status"] != "open"))]
            entities = sorted({i["entity"] for i in every})
            return {"window": window, "total": len(every), "matching": len(chosen), "incidents": chosen[:limit],
                    "entities": entities}
        return self._read(read)

    def entity(self, name: str) -> dict:
        def read(db):
            window = self.window(db)
            rows = db.execute("SELECT window_start AS start, window_size AS size, count, negative_count, mean_score, "
                              "negative_share, ewma FROM aggregates WHERE entity=? ORDER BY window_start DESC LIMIT ?",
                              (name, MAX_WINDOWS)).fetchall()
            alerts = self.alerts(db, name)
            if not rows and not alerts:
                raise UnknownId(f"no entity {name[:80]!r} in {self.path.name}")
            return {"entity": name, "window": window, "windows": [dict(r) for r in reversed(rows)],
                    "truncated": len(rows) == MAX_WINDOWS, "incidents": group_incidents(alerts, window)}
        return self._read(read)

    def documents(self, *, alert_id: int | None = None, entity: str | None = None, window_start: int | None = None,
                  limit: int = 50) -> dict:
        """Documents mentioning an entity (or an alert's evidence), each with the entity's own label and
        score in it, the sentences that drove that score (`evidence`: text, start, end, label, score), and
        the document's own label and score beside it."""
        def read(db):
            if alert_id is not None:
                row = db.execute("SELECT entity, evidence FROM alerts WHERE id=?", (alert_id,)).fetchone()
                if row is None:
                    raise UnknownId(f"no alert with id {alert_id} in {self.path.name}")
                name, ids = row[0], json.loads(row[1])[:limit]
            elif entity is not None:
                name, ids = entity, None
            else:
                raise UserError("give alert_id, or entity (and optionally window_start)")
            select = _documents_select(db)
            if ids is not None:
                marks = ",".join("?" * len(ids))
                found = {r["id"]: r for r in db.execute(f"{select} WHERE d.id IN ({marks})", (name, *ids))} if ids else {}
                rows = [found[i] for i in ids if i in found]  # the alert's order: best evidence first
            elif window_start is not None:
                rows = db.execute(f"{select} WHERE m.window_start=? ORDER BY p_negative DESC, d.id LIMIT ?",
                                  (name, window_start, limit)).fetchall()
            else:
                rows = db.execute(f"{select} ORDER BY m.window_start DESC, d.ts DESC, d.id LIMIT ?",
                                  (name, limit)).fetchall()
            return {"documents": [_document(r) for r in rows]}
        return self._read(read)


def _columns(db, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _documents_select(db) -> str:
    """The documents query for one entity (its name is the first parameter). A database the monitor has
    not opened since per-entity scores came has no such columns: the document's score stands in."""
    mentions, scores = _columns(db, "mentions"), _columns(db, "scores")
    own = {c: f"COALESCE(m.{c}, s.{c})" if c in mentions else f"s.{c}"
           for c in ("p_negative", "p_neutral", "p_positive", "score", "label")}
    doc_evidence = "s.evidence" if "evidence" in scores else "NULL"
    evidence = f"COALESCE(m.evidence, {doc_evidence})" if "evidence" in mentions else doc_evidence
    pick = lambda column, table: f"s.{column}" if column in table else "NULL"  # noqa: E731
    return (f"SELECT d.id, d.ts, d.ts_text, d.source, substr(d.text, 1, {MAX_TEXT_CHARS}) AS text, length(d.text) "
            f"AS text_chars, d.late, {', '.join(f'{v} AS {k}' for k, v in own.items())}, s.label AS document_label, "
            f"s.score AS document_score, {evidence} AS evidence, "
            f"{'m.sentences' if 'sentences' in mentions else 'NULL'} AS entity_sentences, "
            f"{pick('sentences', scores)} AS sentences_scored, {pick('sentences_dropped', scores)} AS sentences_dropped, "
            f"{pick('model', scores)} AS model, l.label AS analyst_label, l.analyst, l.ts AS labelled_at, "
            f"l.previous_label FROM documents d JOIN mentions m ON m.doc_id=d.id AND m.entity=? "
            f"LEFT JOIN scores s ON s.doc_id=d.id LEFT JOIN document_labels l ON l.doc_id=d.id")


def _document(row) -> dict:
    """A row as the page gets it: evidence parsed and kept where it lies inside the text shown, each with
    `span16`, its offsets in UTF-16 code units (how JavaScript indexes a string; start/end count code points)."""
    doc = dict(row)
    evidence = json.loads(doc["evidence"]) if doc["evidence"] else []
    units = lambda i: len(doc["text"][:i].encode("utf-16-le")) // 2  # noqa: E731
    doc["evidence"] = [e | {"span16": [units(e["start"]), units(e["end"])]} for e in evidence
                       if 0 <= e["start"] <= e["end"] <= len(doc["text"])]
    return doc


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_id: StrictStr = Field(min_length=1, max_length=MAX_DOC_ID_CHARS)
    label: StrictStr = Field(max_length=40)
    analyst: StrictStr = Field("analyst", max_length=MAX_ANALYST_CHARS)


class VerdictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alert_id: StrictInt = Field(ge=1, le=2**62)
    verdict: Literal["false_alarm", "confirmed"]
    note: StrictStr = Field("", max_length=MAX_NOTE_CHARS)
    analyst: StrictStr = Field("analyst", max_length=MAX_ANALYST_CHARS)


class DatabaseUnavailable(Exception):
    """The monitor database could not be read right now (-> 503)."""


def _inline_hashes(page: str) -> tuple[list[str], list[str]]:
    """CSP sources ('sha256-...') of the page's inline <script> and <style> blocks."""
    def digests(tag):
        return [f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
                for body in re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)]
    return digests("script"), digests("style")


def render_page(poll_seconds: float) -> tuple[str, str]:
    """(the HTML page, its Content-Security-Policy)."""
    page = PAGE.read_text(encoding="utf-8").replace("{{POLL_MS}}", str(int(poll_seconds * 1000)))
    scripts, styles = _inline_hashes(page)
    policy = (f"default-src 'none'; script-src {' '.join(scripts)}; style-src {' '.join(styles)}; "
              f"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page, policy


def create_app(db_path: str | Path, *, access: Access = DashboardAccess(), limits: ServiceLimits = ServiceLimits(),
               poll_seconds: float = 5.0):
    """The dashboard app over a monitor database (which must exist; its label tables are created)."""
    if not 0.2 <= poll_seconds <= 3600:
        raise UserError(f"poll_seconds must be between 0.2 and 3600; got {poll_seconds}")
    feedback = MonitorFeedback(db_path)  # checks the file is a monitor database; creates the label tables
    reader = MonitorReader(Path(db_path))
    page, policy = render_page(poll_seconds)

    def answer(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UnknownId as exc:
            raise HTTPException(404, str(exc)) from None
        except UserError as exc:
            raise HTTPException(422, str(exc)) from None
        except (DatabaseUnavailable, sqlite3.OperationalError) as exc:
            raise HTTPException(503, f"monitor database unavailable, try again: {exc}") from None

    text = dict(max_length=MAX_QUERY_CHARS)
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})

    @router.get("/api/state")
    def state():
        return answer(reader.state)

    @router.get("/api/incidents")
    def incidents(entity: str = Query("", **text), min_severity: Literal["low", "medium", "high"] = "low",
                  status: Literal["all", "open", "reviewed", "confirmed", "false_alarm"] = "all",
                  limit: int = Query(200, ge=1, le=1000)):
        return answer(reader.incidents, entity=entity, min_severity=min_severity, status=status, limit=limit)

    @router.get("/api/entity")
    def entity(name: str = Query(..., min_length=1, **text)):
        return answer(reader.entity, name)

    @router.get("/api/documents")
    def documents(alert_id: int | None = Query(None, ge=1, le=2**62), entity: str | None = Query(None, **text),
                  window_start: int | None = Query(None, ge=-2**62, le=2**62),
                  limit: int = Query(50, ge=1, le=MAX_DOCUMENTS)):
        return answer(reader.documents, alert_id=alert_id, entity=entity, window_start=window_start, limit=limit)

    @router.post("/api/labels")
    def label(body: LabelRequest):
        return answer(feedback.label_document, body.doc_id, body.label, analyst=body.analyst)

    @router.post("/api/verdicts")
    def verdict(body: VerdictRequest):
        return answer(feedback.judge_alert, body.alert_id, body.verdict, analyst=body.analyst, note=body.note)

    async def on_stop():
        feedback.close()

    return create_service("verticals finance dashboard", (router,), access=access, limits=limits,
                          info=lambda: {"database": Path(db_path).name}, on_stop=on_stop,
                          request_hint='labels: {"doc_id", "label"}; verdicts: {"alert_id", "verdict"}')
