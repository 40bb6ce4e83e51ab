"""Same input, same alerts: a window is evaluated once, when it has closed, with its whole on-time
content, so batch size, kill points and restarts change nothing (ids, values, evidence included)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from solutions.finance.monitor.loop import run_monitor
from solutions.finance.monitor.store import Store
from tests.finance.conftest import KeywordModel
from tests.finance.test_monitor import _config

NEGATIVE, NEUTRAL = "shares falls after the results", "holds its annual meeting"
HOUR9 = 1772442000  # 2026-03-02T09:00:00Z


def _doc(doc_id: str, ticker: str, hh: int, mm: int, text: str) -> str:
    return json.dumps({"id": doc_id, "ts": f"2026-03-02T{hh:02d}:{mm:02d}:00Z", "text": f"{ticker} {text}",
                       "tickers": [ticker]})


def _stream() -> list[str]:
    """ACME: a quiet hour 8, then hour 9 opens with 6 negative documents and ends with 4 neutral
    ones (a frozen-at-first-crossing alert would say 1.0; the window says 0.6); NOVA: a negative
    burst in hour 10. Plus a duplicate id, a malformed line, a late ACME document for hour 9 and one
    dated 2099 (quarantined: it must not close the open windows)."""
    lines = [_doc(f"a8-{i}", "ACME", 8, i, NEUTRAL) for i in range(10)]
    lines += [_doc(f"n8-{i}", "NOVA", 8, 30 + i, NEUTRAL) for i in range(2)]
    lines += [_doc(f"a9-{i}", "ACME", 9, i, NEGATIVE) for i in range(6)]
    lines += [_doc("n9-0", "NOVA", 9, 7, NEUTRAL), _doc("a9-0", "ACME", 9, 8, NEUTRAL), "{broken"]
    lines += [_doc(f"a9-{i}", "ACME", 9, 4 + i, NEUTRAL) for i in range(6, 10)]
    lines += [_doc(f"n10-{i}", "NOVA", 10, i, NEGATIVE) for i in range(9)]
    lines += [json.dumps({"id": "future", "ts": "2099-01-01T00:00:00Z", "text": "ACME falls", "tickers": ["ACME"]})]
    lines += [_doc(f"a10-{i}", "ACME", 10, 10 + i, NEUTRAL) for i in range(3)]
    lines += [_doc(f"a11-{i}", "ACME", 11, i, NEGATIVE) for i in range(6)]
    lines += [_doc("late", "ACME", 9, 30, NEGATIVE), _doc("n11-0", "NOVA", 11, 9, NEUTRAL)]
    lines += [json.dumps({"id": "mixed", "ts": "2026-03-02T11:20:00Z", "tickers": ["ACME", "NOVA"],
                          "text": f"Market wrap. $ACME {NEGATIVE}. $NOVA {NEUTRAL}."})]  # one text, two companies
    return lines


def _run(tmp_path, batch_size: int, model=None):
    path = tmp_path / "in.jsonl"
    if not path.exists():
        path.write_text("\n".join(_stream()) + "\n")
    return run_monitor(_config(tmp_path, [path], batch_size=batch_size), model=model or KeywordModel())


def _outcome(db) -> dict:
    conn = sqlite3.connect(db)
    return {"alerts": conn.execute("SELECT id, entity, rule, window_start, window_end, value, baseline, detail, "
                                   "evidence FROM alerts ORDER BY id").fetchall(),
            "aggregates": conn.execute("SELECT * FROM aggregates ORDER BY entity, window_start").fetchall(),
            "documents": conn.execute("SELECT id, late FROM documents ORDER BY id").fetchall(),
            "scores": conn.execute("SELECT doc_id, score, label, sentences, sentences_dropped, evidence FROM scores "
                                   "ORDER BY doc_id").fetchall(),
            "mentions": conn.execute("SELECT * FROM mentions ORDER BY doc_id, entity").fetchall(),
            "pending": conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0]}


def _delivered(tmp_path) -> list[int]:
    return sorted(json.loads(line)["alert_id"] for line in (tmp_path / "alerts.jsonl").read_text().splitlines())


def test_alerts_are_the_same_whatever_the_batch_size(tmp_path):
    outcomes = []
    for batch_size in (1, 7, 1000):
        run_dir = tmp_path / f"b{batch_size}"
        run_dir.mkdir()
        _run(run_dir, batch_size)
        outcomes.append(_outcome(run_dir / "monitor.db"))
        assert _delivered(run_dir) == [a[0] for a in outcomes[-1]["alerts"]]  # each delivered once
    assert outcomes[0] == outcomes[1] == outcomes[2]
    alerts = {(a[1], a[2], a[3]): a for a in outcomes[0]["alerts"]}
    spike = alerts[("ACME", "negative_share_spike", HOUR9)]
    assert spike[5] == pytest.approx(6 / 10)  # the whole window, not the first 5 documents
    assert json.loads(spike[8]) == [f"a9-{i}" for i in range(6)]  # the late document is no evidence
    assert ("NOVA", "negative_share_spike", HOUR9 + 3600) in alerts
    assert ("ACME", "negative_share_spike", HOUR9 + 2 * 3600) in alerts  # the last window: closed by end of input
    assert ("late", 1) in outcomes[0]["documents"] and outcomes[0]["pending"] == 0
    assert "future" not in {doc_id for doc_id, _ in outcomes[0]["documents"]}
    mixed = {row[1]: row for row in outcomes[0]["mentions"] if row[0] == "mixed"}  # per company, its own sentence
    assert mixed["ACME"][3:7] == pytest.approx((0.8, 0.15, 0.05, -0.75)) and mixed["ACME"][7:9] == ("negative", 1)
    assert mixed["NOVA"][7:9] == ("neutral", 1)
    text = f"Market wrap. $ACME {NEGATIVE}. $NOVA {NEUTRAL}."
    (acme,) = json.loads(mixed["ACME"][9])
    assert text[acme["start"]:acme["end"]] == acme["text"] == f"$ACME {NEGATIVE}."
    payloads = {(p["entity"], p["rule"], p["window_start"][11:13]): p
                for p in map(json.loads, (tmp_path / "b1" / "alerts.jsonl").read_text().splitlines())}
    spike = payloads[("ACME", "negative_share_spike", "11")]  # the webhook/JSONL payload carries the sentences
    assert [e["doc_id"] for e in spike["evidence_sentences"]] == spike["evidence"][:3]
    assert all(e["label"] == "negative" and e["evidence"][0]["label"] == "negative" for e in spike["evidence_sentences"])


class Killed(BaseException):
    """Stands in for kill -9: nothing in the monitor catches it."""


class DyingModel(KeywordModel):
    def __init__(self, die_at_call: int):
        self.calls, self.die_at_call = 0, die_at_call

    def predict_proba(self, texts, batch_size=64):
        self.calls += 1
        if self.calls == self.die_at_call:
            raise Killed
        return super().predict_proba(texts, batch_size)


def _die_once(monkeypatch, name: str, when=lambda *args: True) -> None:
    """Store.<name> raises Killed the first time `when(store, *args)` holds (then works again)."""
    original = getattr(Store, name)

    def dying(self, *args):
        if when(self, *args):
            monkeypatch.undo()
            raise Killed
        return original(self, *args)

    monkeypatch.setattr(Store, name, dying)


@pytest.mark.parametrize("kill", ["while scoring a batch", "after a batch, before its alerts",
                                  "after the alerts, before delivery", "at the end of the input"])
def test_a_run_killed_anywhere_then_restarted_gives_the_same_alerts(tmp_path, kill, monkeypatch):
    reference = tmp_path / "ref"
    reference.mkdir()
    _run(reference, 4)
    killed = tmp_path / "killed"
    killed.mkdir()
    model = None
    if kill == "while scoring a batch":
        model = DyingModel(die_at_call=5)
    elif kill == "after a batch, before its alerts":
        _die_once(monkeypatch, "commit_alerts")
    elif kill == "after the alerts, before delivery":
        _die_once(monkeypatch, "due_deliveries", lambda store, sink, now: bool(store.pending_deliveries()))
    else:
        _die_once(monkeypatch, "close_input")
    with pytest.raises(Killed):
        _run(killed, 4, model)
    monkeypatch.undo()
    _run(killed, 4)  # the restart
    assert _outcome(killed / "monitor.db") == _outcome(reference / "monitor.db")
    assert _delivered(killed) == _delivered(reference)


def test_following_closes_windows_by_the_watermark_and_end_of_input_closes_the_rest(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(_stream()) + "\n")
    calls = iter(range(10**6))
    following = run_monitor(_config(tmp_path, [path], follow=True, poll_seconds=0.01),
                            model=KeywordModel(), stop=lambda: next(calls) >= 2)  # one pass, then stop
    assert following.lines == len(_stream())
    windows = {(a[1], a[3]) for a in _outcome(tmp_path / "monitor.db")["alerts"]}
    assert ("ACME", HOUR9) in windows and ("ACME", HOUR9 + 2 * 3600) not in windows  # hour 11 is still open
    run_monitor(_config(tmp_path, [path]), model=KeywordModel())  # nothing new to read; the input is complete
    windows = {(a[1], a[3]) for a in _outcome(tmp_path / "monitor.db")["alerts"]}
    assert ("ACME", HOUR9 + 2 * 3600) in windows
