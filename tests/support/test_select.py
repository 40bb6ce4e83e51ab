"""`verticals support select` and `Run.select`: which logged or given queries to label next, on a tiny run
and a real SQLite prediction log."""

from __future__ import annotations

import csv
import itertools
import json
import sqlite3
import time

import pytest

import verticals
from core.foundation.errors import UserError
from core.mlops.feedback import PredictionLog, text_sha256
from core.mlops.selection import STRATEGIES
from solutions.support.labelling import SHEET_COLUMNS
from verticals.cli import main

QUERIES = ["my card was declined", "transfer pending for days", "card or transfer, not sure", "what is my pin",
           "the atm kept my card", "money sent abroad is missing", "hello"]


def _route(text, intent="card", confidence=0.9):
    return {"text": text, "intent": intent, "confidence": confidence, "fallback_reason": None, "in_scope_score": None}


def _log(path, texts, *, store_text=True, confidences=None):
    """A prediction log of `texts` (each its own batch, so later rows are newer); returns the request ids."""
    confidences = confidences or [0.9] * len(texts)
    with PredictionLog(path, store_text=store_text, clock=itertools.count(time.time()).__next__) as log:
        return [log.log([_route(t, confidence=c)], "v1", label_key="intent")[0] for t, c in zip(texts, confidences)]


def _sheet(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_select_from_a_log_skips_labelled_texts_and_counts_repeats(support_run, tmp_path, capsys):
    db = tmp_path / "predictions.db"
    ids = _log(db, QUERIES + ["hello", "my card was declined", "hello"])
    with PredictionLog(db) as log:
        log.record_feedback(ids[0], "card")  # "my card was declined" is labelled: its later request is too
    out = tmp_path / "picks.csv"
    assert main(["support", "select", str(db), "--run", str(support_run), "--budget", "100", "--out", str(out)]) == 0
    columns, rows = _sheet(out)
    assert tuple(columns) == SHEET_COLUMNS
    texts = [r["text"] for r in rows]
    assert sorted(texts) == sorted(set(QUERIES) - {"my card was declined"})  # each once, the labelled one left out
    hello = next(r for r in rows if r["text"] == "hello")
    assert hello["count"] == "3" and hello["request_id"] == ids[-1]  # the most recent request of the text
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    margins = [float(r["score"]) for r in rows]
    assert margins == sorted(margins)  # margin: the most ambiguous first
    first = rows[0]
    assert first["reason"].startswith(f"top two intents {first['intent']} {float(first['confidence']):.2f} / "
                                      f"{first['runner_up']} {float(first['runner_up_confidence']):.2f}")
    assert all(r["label"] == "" and r["model_version"] == "v1" for r in rows)
    assert "6 distinct unlabelled texts of 10 rows; 2 rows already labelled, 2 repeats" in capsys.readouterr().out


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_picks_distinct_unlabelled_queries_from_a_file(support_run, tmp_path, strategy):
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES + ["", "hello"]) + "\n")
    labelled = tmp_path / "train.csv"
    labelled.write_text("text,label\nwhat is my pin,card\n")
    run = verticals.load(support_run)
    rows = run.select(queries, 4, strategy=strategy, seed=1, labelled=[labelled])
    assert len(rows) == 4 and len({r["text"] for r in rows}) == 4
    assert "what is my pin" not in {r["text"] for r in rows}
    assert all(r["strategy"] == strategy and r["request_id"] == "" and r["reason"] for r in rows)
    assert all(r["text_sha256"] == text_sha256(r["text"]) for r in rows)
    assert rows == run.select(queries, 4, strategy=strategy, seed=1, labelled=[labelled])  # seeded


def test_a_pool_larger_than_max_candidates_is_sampled_and_said(support_run, tmp_path, capsys):
    from verticals.cli import main

    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(f"{q} number {i}" for i, q in enumerate(QUERIES * 3)) + "\n")
    run = verticals.load(support_run)
    rows = run.select(queries, 3, strategy="margin", max_candidates=5)
    pool = set(queries.read_text().split("\n")) - {""}
    assert len(rows) == 3 and {r["text"] for r in rows} <= pool
    assert rows == run.select(queries, 3, strategy="margin", max_candidates=5)  # the sample is seeded
    out = tmp_path / "sheet.csv"
    assert main(["support", "select", str(queries), "--run", str(support_run), "--budget", "3", "--out", str(out),
                 "--max-candidates", "5"]) == 0
    assert f"scored a random sample of 5 of the {len(pool)} unlabelled texts" in capsys.readouterr().err
    assert main(["support", "select", str(queries), "--run", str(support_run), "--budget", "6", "--out",
                 str(tmp_path / "other.csv"), "--max-candidates", "5"]) == 2
    assert "below the budget" in capsys.readouterr().err


def test_select_reads_csv_and_jsonl_text_columns(support_run, tmp_path):
    (tmp_path / "q.csv").write_text("id,body\n1,card declined\n2,transfer late\n")
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in QUERIES[:3]))
    run = verticals.load(support_run)
    assert {r["text"] for r in run.select(tmp_path / "q.csv", 5, text_column="body")} == {"card declined", "transfer late"}
    assert len(run.select(tmp_path / "q.jsonl", 5, strategy="entropy")) == 3


def test_a_hash_only_log_is_ranked_by_the_logged_confidence(support_run, tmp_path, capsys):
    db = tmp_path / "hashes.db"
    ids = _log(db, QUERIES[:4], store_text=False, confidences=[0.9, 0.3, 0.6, 0.5])
    out = tmp_path / "picks.csv"
    assert main(["support", "select", str(db), "--run", str(support_run), "--budget", "2", "--out", str(out)]) == 0
    _, rows = _sheet(out)
    assert [r["request_id"] for r in rows] == [ids[1], ids[3]] and all(r["text"] == "" for r in rows)
    assert rows[0]["text_sha256"] == text_sha256(QUERIES[1]) and rows[0]["strategy"] == "least_confidence"
    assert "keeps only text hashes" in capsys.readouterr().err
    assert main(["support", "select", str(db), "--run", str(support_run), "--budget", "2", "--out",
                 str(tmp_path / "b.csv"), "--strategy", "badge"]) == 2
    assert "strategy 'badge' needs the texts" in capsys.readouterr().err


def _foreign_sqlite(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: PredictionLog(p / "empty.db").close() or p / "empty.db", "holds no predictions yet"),
    (lambda p: _foreign_sqlite(p / "other.db"), "an SQLite database but not a prediction log"),
    (lambda p: (p / "x.pdf").write_bytes(b"%PDF-1.4") and p / "x.pdf", "neither a prediction log nor a file of queries"),
    (lambda p: p / "missing.db", "missing.db not found"),
    (lambda p: (p / "q.csv").write_text("body\nhi\n") and p / "q.csv", "has no column 'text'"),
    (lambda p: (p / "q.txt").write_text("\n\n") and p / "q.txt", "holds no queries"),
])
def test_bad_sources_are_refused_with_a_message(support_run, tmp_path, capsys, make, message):
    source = make(tmp_path)
    assert main(["support", "select", str(source), "--run", str(support_run), "--budget", "2",
                 "--out", str(tmp_path / "out.csv")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_a_fully_labelled_log_a_bad_budget_a_non_classifier_run_and_an_existing_sheet_are_refused(
        support_run, tmp_path, capsys):
    db = tmp_path / "p.db"
    ids = _log(db, ["card declined"])
    with PredictionLog(db) as log:
        log.record_feedback(ids[0], "card")
    args = ["support", "select", str(db), "--run", str(support_run), "--out", str(tmp_path / "o.csv")]
    assert main(args + ["--budget", "3"]) == 2
    assert "labelled already: nothing to choose from" in capsys.readouterr().err
    assert main(args + ["--budget", "0"]) == 2
    assert "budget must be a whole number of texts, at least 1" in capsys.readouterr().err
    other = tmp_path / "recsys-run"
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"config": {"task": "item_encoder"}}))
    assert main(["support", "select", str(db), "--run", str(other), "--budget", "1"]) == 2
    assert "is a finished item_encoder run without a classifier" in capsys.readouterr().err
    (tmp_path / "o.csv").write_text("rank,label\n1,card\n")
    assert main(args + ["--budget", "1"]) == 2
    assert "o.csv exists (it may hold labels being filled in)" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        verticals.load(support_run).select(db, 1, strategy="nope")
