"""The monitor end to end in-process (real SQLite file, keyword stub model): idempotence,
malformed input, the planted demo burst, directory sources, the HTML report."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from core.foundation.errors import UserError
from solutions.finance.monitor.aggregate import WindowStats
from solutions.finance.monitor.loop import MonitorConfig, refresh_aggregates, run_monitor
from solutions.finance.monitor.report import render_report
from solutions.finance.monitor.rules import RuleSet
from solutions.finance.monitor.store import Record, Store
from tests.finance.conftest import demo_stream_dir


def _config(tmp_path, inputs, **kw) -> MonitorConfig:
    demo = demo_stream_dir()
    return MonitorConfig(inputs=tuple(str(i) for i in inputs), db=tmp_path / "monitor.db", model="unused",
                         watchlist=demo / "watchlist.yaml", sinks=(f"jsonl:{tmp_path / 'alerts.jsonl'}",),
                         drain_seconds=0, **kw)


def _lines(n_start, n, ticker="ACME", text="Acme Corp holds its annual meeting", hour=9):
    return [json.dumps({"id": f"d{i}", "ts": f"2026-03-02T{hour:02d}:{i % 60:02d}:00Z", "text": text,
                        "tickers": [ticker]}) for i in range(n_start, n_start + n)]


def test_demo_stream_raises_the_planted_bridgeway_alert_with_evidence(tmp_path, keyword_model):
    stats = run_monitor(_config(tmp_path, [demo_stream_dir() / "stream.jsonl"]), model=keyword_model)
    assert stats.totals["documents"] == 394 and stats.totals["quarantined"] == 0
    db = sqlite3.connect(tmp_path / "monitor.db")
    alerts = db.execute("SELECT entity, rule, window_start, evidence FROM alerts").fetchall()
    burst = [a for a in alerts if a[0] == "BRDG" and a[1] == "negative_share_spike"]
    assert burst, alerts
    start = 1773147600  # 2026-03-10T13:00:00Z
    assert all(start <= a[2] < start + 4 * 3600 for a in burst)
    evidence = json.loads(burst[0][3])
    assert evidence and all(i.startswith("n0") for i in evidence)
    assert db.execute("SELECT COUNT(*) FROM dirty").fetchone()[0] == 0
    delivered = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert len(delivered) == len(alerts)


def test_rerunning_the_same_input_adds_nothing(tmp_path, keyword_model):
    cfg = _config(tmp_path, [demo_stream_dir() / "stream.jsonl"])
    first = run_monitor(cfg, model=keyword_model)
    copy = tmp_path / "copy.jsonl"  # the same documents under another source: ids deduplicate
    shutil.copy(demo_stream_dir() / "stream.jsonl", copy)
    second = run_monitor(cfg, model=keyword_model)
    third = run_monitor(_config(tmp_path, [copy]), model=keyword_model)
    assert second.lines == 0  # the file's offset was committed
    assert third.lines == 394 and third.new_documents == 0 and third.already_seen == 394
    assert second.totals == first.totals == third.totals
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == first.totals["alerts"]


def test_malformed_lines_are_quarantined_with_reasons_and_do_not_stop_the_monitor(tmp_path, keyword_model):
    bad = ["{not json", json.dumps(["a list"]), json.dumps({"ts": "2026-03-02T09:00:00Z", "text": "no id"}),
           json.dumps({"id": "b1", "ts": "yesterday", "text": "Acme Corp"}),
           json.dumps({"id": "b2", "ts": "2026-03-02T09:00:00Z", "text": "   "}),
           json.dumps({"id": "b3", "ts": "2026-03-02T09:00:00Z", "text": "Acme", "tickers": "ACME"})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(_lines(0, 3) + bad + [""] + _lines(3, 2)) + "\n")
    stats = run_monitor(_config(tmp_path, [path]), model=keyword_model)
    assert stats.new_documents == 5 and stats.quarantined == 6
    assert stats.totals["quarantine_reasons"] == {"bad JSON": 1, "not a JSON object": 1, "missing field 'id'": 1,
                                                  "bad timestamp": 1, "empty text": 1, "bad tickers": 1}
    rows = sqlite3.connect(tmp_path / "monitor.db").execute("SELECT line, reason FROM quarantine").fetchall()
    assert ("{not json", "bad JSON: Expecting property name enclosed in double quotes") in rows
    assert run_monitor(_config(tmp_path, [path]), model=keyword_model).totals["quarantined"] == 6  # not twice


def test_directory_source_picks_up_new_files_and_appended_lines(tmp_path, keyword_model):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("\n".join(_lines(0, 4)) + "\n")
    cfg = _config(tmp_path, [inbox])
    assert run_monitor(cfg, model=keyword_model).new_documents == 4
    (inbox / "b.jsonl").write_text("\n".join(_lines(4, 3)) + "\n")
    with open(inbox / "a.jsonl", "a") as handle:
        handle.write("\n".join(_lines(7, 2)) + "\n")
    stats = run_monitor(cfg, model=keyword_model)
    assert (stats.new_documents, stats.totals["documents"]) == (5, 9)


def test_a_partial_last_line_waits_while_following(tmp_path, keyword_model):
    from solutions.finance.monitor.sources import read_lines

    path = tmp_path / "in.jsonl"
    path.write_text(_lines(0, 1)[0] + "\n" + _lines(1, 1)[0][:20])
    assert len(read_lines(path, 0, 10, final=False)) == 1
    assert len(read_lines(path, 0, 10, final=True)) == 2


def test_a_database_keeps_its_window_size(tmp_path, keyword_model):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(_lines(0, 2)) + "\n")
    run_monitor(_config(tmp_path, [path]), model=keyword_model)
    with pytest.raises(UserError, match="3600 s windows"):
        run_monitor(_config(tmp_path, [path], window="15m"), model=keyword_model)


def test_html_report_is_self_contained_with_charts_and_alert_table(tmp_path, keyword_model):
    run_monitor(_config(tmp_path, [demo_stream_dir() / "stream.jsonl"]), model=keyword_model)
    out = render_report(tmp_path / "monitor.db", tmp_path / "report.html")
    page = out.read_text()
    assert page.count("<svg") >= 8 and "BRDG" in page and "negative_share_spike" in page
    assert "<table>" in page and "n0231" in page or "n0238" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    with pytest.raises(UserError, match="not found"):
        render_report(tmp_path / "nope.db", tmp_path / "x.html")


def test_stdin_source_reads_until_end_of_input(tmp_path, keyword_model, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(_lines(0, 5) + ["{bad"]) + "\n"))
    stats = run_monitor(_config(tmp_path, ["-"]), model=keyword_model)
    assert (stats.new_documents, stats.quarantined) == (5, 1)


def test_a_refresh_commits_every_entitys_aggregates_in_one_transaction_or_none(tmp_path):
    store = Store(tmp_path / "m.db", 3600)
    neutral = {"p_negative": 0.1, "p_neutral": 0.8, "p_positive": 0.1, "score": 0.0, "label": "neutral"}
    records = [Record({"id": f"d{i}", "ts": 7200.0 + i, "ts_text": "t", "text": "x", "source": None, "origin": "test"},
                      {"doc_id": f"d{i}", **neutral}, (entity,), i, "line")
               for i, entity in enumerate(["ACME", "NOVA", "ORBT"])]
    store.commit_batch(source_key="test", offset=3, records=records, quarantined=[])
    statements = []
    store.db.set_trace_callback(statements.append)
    refresh_aggregates(store, RuleSet())
    assert statements.count("COMMIT") == 1  # one fsync for the three entities
    assert store.dirty_from() == {} and [store.aggregates(e)[0].count for e in ("ACME", "NOVA", "ORBT")] == [1, 1, 1]
    broken = WindowStats("NOVA", 7200, 3600, 1, 0, 0.0, object())  # an EWMA SQLite cannot bind
    with pytest.raises(sqlite3.Error):
        store.commit_aggregates([("ACME", 7200, [WindowStats("ACME", 7200, 3600, 99, 0, 0.0, 0.0)]),
                                 ("NOVA", 7200, [broken])])
    assert store.aggregates("ACME")[0].count == 1  # the whole refresh rolled back, ACME's part too
    store.close()
