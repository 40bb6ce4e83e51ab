"""One bad line never stops the monitor: each poison class is quarantined with its reason, the good
lines of its batch are stored, and a restart neither crashes nor quarantines it twice. The same
isolation holds for a document the model fails on and for a row the database refuses."""

from __future__ import annotations

import io
import json
import math
import sqlite3

import numpy as np
import pytest

from solutions.finance.monitor.loop import run_monitor
from solutions.finance.monitor.lines import MAX_LINE_BYTES
from solutions.finance.monitor.sources import read_lines
from solutions.finance.monitor.store import Record, Store
from tests.finance.conftest import KeywordModel
from tests.finance.test_monitor import _config, _lines

TS = "2026-03-02T09:30:00Z"


def _doc(**fields) -> bytes:
    """A document line; json.dumps writes a lone surrogate as the escape \\ud800, as a feed would."""
    return json.dumps({"id": "poison", "ts": TS, "text": "Acme Corp update", **fields}).encode()


POISON = {  # name -> (the line's bytes, the quarantine reason's kind)
    "huge_integer": (b'{"id": "p", "ts": "' + TS.encode() + b'", "text": "Acme", "n": ' + b"9" * 5000 + b"}",
                     "bad JSON"),
    "deep_nesting": (b'{"id": "p", "ts": "' + TS.encode() + b'", "text": "Acme", "n": ' + b"[" * 100_000
                     + b"]" * 100_000 + b"}", "bad JSON"),
    "surrogate_in_text": (_doc(text="Acme Corp \ud800 falls"), "bad text"),
    "invisible_only_text": (_doc(text="\u200b\ufeff\u00ad"), "empty text: no visible characters"),
    "surrogate_in_id": (_doc(id="p\ud800"), "bad id"),
    "surrogate_in_tickers": (_doc(tickers=["AC\udfff"]), "bad tickers"),
    "surrogate_in_source": (_doc(source="wire\ud800"), "bad source"),
    "surrogate_in_ts": (_doc(ts="2026-03-02T09:30:00\ud800"), "bad timestamp"),
    "timestamp_far_in_the_future": (_doc(ts="2099-01-01T00:00:00Z"), "bad timestamp"),  # would close every window
    "raw_invalid_utf8": (b'{"id": "p", "ts": "' + TS.encode() + b'", "text": "Acme \xed\xa0\x80 falls"}',
                         "bad encoding"),
    "oversized_line": (_doc(text="Acme " + "x" * (MAX_LINE_BYTES + 10)), "line over 1000000 bytes"),
}


def _write(path, poison: bytes) -> None:
    good = [line.encode() for line in _lines(0, 4)]
    path.write_bytes(b"\n".join(good[:2] + [poison] + good[2:]) + b"\n")


def _quarantine(db) -> list[tuple[str, str]]:
    return sqlite3.connect(db).execute("SELECT line, reason FROM quarantine").fetchall()


@pytest.mark.parametrize("name", sorted(POISON))
def test_a_poison_line_is_quarantined_and_its_batch_is_stored(tmp_path, keyword_model, name):
    line, kind = POISON[name]
    path = tmp_path / "in.jsonl"
    _write(path, line)
    cfg = _config(tmp_path, [path], batch_size=64)  # the poison shares one batch with the good lines
    stats = run_monitor(cfg, model=keyword_model)
    assert (stats.new_documents, stats.quarantined) == (4, 1)
    (stored_line, reason), = _quarantine(tmp_path / "monitor.db")
    assert reason.startswith(kind), reason
    assert len(stored_line) <= 4000 and stored_line.encode("utf-8")  # the record itself is storable
    again = run_monitor(cfg, model=keyword_model)  # a restart: no crash loop, nothing twice
    assert again.lines == 0 and again.totals["quarantined"] == 1 and again.totals["documents"] == 4
    path.write_bytes(path.read_bytes() + line + b"\n" + _lines(4, 1)[0].encode() + b"\n")
    more = run_monitor(cfg, model=keyword_model)  # the same poison again, later in the file
    assert (more.new_documents, more.quarantined) == (1, 1)


def test_an_oversized_line_is_skipped_in_chunks_and_waits_for_its_end_while_following(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x" * 50_000 + b"\n" + b"y" * 30_000)  # the second line is still being written
    lines = read_lines(path, 0, 10, final=False, max_line_bytes=1000)
    assert len(lines) == 1 and lines[0].end == 50_001 and lines[0].problem == "line over 1000 bytes (50001 bytes)"
    assert len(lines[0].raw) <= 4000
    (last,) = read_lines(path, lines[0].end, 10, final=True, max_line_bytes=1000)
    assert last.end == path.stat().st_size and last.problem.startswith("line over 1000 bytes")


def test_invalid_utf8_on_stdin_is_quarantined(tmp_path, keyword_model, monkeypatch):
    good = "\n".join(_lines(0, 3)).encode()
    stdin = io.TextIOWrapper(io.BytesIO(good + b'\n{"id": "p", "text": "\xed\xa0\x80"}\n'), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    stats = run_monitor(_config(tmp_path, ["-"]), model=keyword_model)
    assert (stats.new_documents, stats.quarantined) == (3, 1)
    assert _quarantine(tmp_path / "monitor.db")[0][1].startswith("bad encoding")


class PickyModel(KeywordModel):
    """Raises on texts with 'explode', gives NaN for texts with 'nan', otherwise the keyword stub;
    `broken` makes it fail on everything."""

    broken = False

    def predict_proba(self, texts, batch_size=64):
        if self.broken or any("explode" in t for t in texts):
            raise RuntimeError("model failed")
        probs = super().predict_proba(texts, batch_size)
        probs[[i for i, t in enumerate(texts) if "nan" in t]] = math.nan
        return probs


def test_a_document_the_model_fails_on_is_quarantined_not_the_batch(tmp_path):
    path = tmp_path / "in.jsonl"
    bad = [json.dumps({"id": "x1", "ts": TS, "text": "Acme will explode"}),
           json.dumps({"id": "x2", "ts": TS, "text": "Acme nan"})]
    path.write_text("\n".join(_lines(0, 2) + bad + _lines(2, 2)) + "\n")
    stats = run_monitor(_config(tmp_path, [path]), model=PickyModel())
    assert (stats.new_documents, stats.quarantined) == (4, 2)
    reasons = sorted(r for _, r in _quarantine(tmp_path / "monitor.db"))
    assert reasons[0] == "scoring failed: RuntimeError: model failed"
    assert reasons[1].startswith("scoring failed: probabilities") and "not finite" in reasons[1]


def test_a_broken_model_raises_instead_of_quarantining_the_stream(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(_lines(0, 3)) + "\n")
    model = PickyModel()
    model.broken = True
    with pytest.raises(RuntimeError, match="model failed"):
        run_monitor(_config(tmp_path, [path]), model=model)
    counts = sqlite3.connect(tmp_path / "monitor.db").execute(
        "SELECT (SELECT COUNT(*) FROM documents), (SELECT COUNT(*) FROM quarantine), "
        "(SELECT COUNT(*) FROM offsets)").fetchone()
    assert counts == (0, 0, 0)  # nothing committed: the batch is read again once the model works


def _record(doc_id: str, text: str, start: int) -> Record:
    return Record({"id": doc_id, "ts": 1_000_000.0, "ts_text": "t", "text": text, "source": None, "origin": "o"},
                  {"doc_id": doc_id, "p_negative": 0.1, "p_neutral": 0.8, "p_positive": 0.1, "score": 0.0,
                   "label": "neutral"}, ("ACME",), start, text)


def test_a_row_the_database_refuses_is_quarantined_and_the_rest_of_the_batch_commits(tmp_path):
    store = Store(tmp_path / "s.db", 3600)
    records = [_record("a", "fine", 0), _record("b", "lone \ud800 surrogate", 10), _record("c", "fine too", 20)]
    refused = store.commit_batch(source_key="k", offset=30, records=records, quarantined=[])
    assert refused == 1
    assert [r[0] for r in store.db.execute("SELECT id FROM documents ORDER BY id")] == ["a", "c"]
    assert store.db.execute("SELECT COUNT(*) FROM mentions").fetchone()[0] == 2
    ((line, reason),) = store.db.execute("SELECT line, reason FROM quarantine").fetchall()
    assert line == "lone \\ud800 surrogate" and reason.startswith("not storable: UnicodeEncodeError")
    assert store.offset("k") == 30
    store.close()


def test_scores_are_checked_finite_per_document():
    from solutions.finance.monitor.scoring import score_documents
    from solutions.finance.monitor.sources import parse_document

    docs = [parse_document(json.dumps({"id": str(i), "ts": TS, "text": t})) for i, t in enumerate(["ok", "nan"])]
    rows = score_documents(PickyModel(), docs, 8)
    assert rows[0].document["label"] == "neutral" and rows[0].document["score"] == pytest.approx(0.1 - 0.1)
    assert isinstance(rows[1], str) and np.isnan(PickyModel().predict_proba(["nan"])).all()


def test_an_unforeseen_error_on_one_line_quarantines_that_line(tmp_path, keyword_model, monkeypatch):
    from solutions.finance.entities import EntityMatcher

    original = EntityMatcher.extract

    def extract(self, text, tickers=()):
        if "boom" in text:
            raise KeyError("a bug that only this line reaches")
        return original(self, text, tickers)

    monkeypatch.setattr(EntityMatcher, "extract", extract)
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(_lines(0, 2) + [json.dumps({"id": "x", "ts": TS, "text": "boom"})] + _lines(2, 2)) + "\n")
    stats = run_monitor(_config(tmp_path, [path]), model=keyword_model)
    assert (stats.new_documents, stats.quarantined) == (4, 1)
    assert _quarantine(tmp_path / "monitor.db")[0][1] == "unreadable: KeyError: 'a bug that only this line reaches'"
