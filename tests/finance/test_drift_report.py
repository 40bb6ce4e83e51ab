"""`verticals finance drift`: the monitor's scores against the sentiment run's validation baseline."""

from __future__ import annotations

import json
import sqlite3

import pytest

from core.foundation.errors import UserError
from solutions.finance.monitor.health import score_stats, write_monitor_drift
from tests.finance.conftest import demo_stream_dir


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, tiny_sentiment_run):
    import verticals

    db = tmp_path_factory.mktemp("drift") / "risk.db"
    verticals.monitor(str(tiny_sentiment_run), db).run(demo_stream_dir())
    return db


def test_the_report_compares_the_stream_with_the_baseline(monitored, tiny_sentiment_run, tmp_path, capsys):
    from verticals.cli import main

    assert main(["finance", "drift", str(monitored), "--run", str(tiny_sentiment_run), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "drift.json").read_text())
    stored = sqlite3.connect(monitored).execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    assert result["n"] == stored > 0 and result["model_version"].startswith("run@")
    assert result["psi_confidence"] is not None and 0 <= result["label_shift"] <= 1
    assert (tmp_path / "drift.png").stat().st_size > 0 and "| psi_confidence |" in (tmp_path / "drift.md").read_text()
    assert "documents" in capsys.readouterr().out


def test_a_stream_scored_all_negative_raises_the_label_shift_alert(monitored, tiny_sentiment_run, tmp_path):
    shifted = tmp_path / "shifted.db"
    sqlite3.connect(monitored).backup(target := sqlite3.connect(shifted))
    target.execute("UPDATE scores SET label='negative', p_negative=0.98, p_neutral=0.01, p_positive=0.01")
    target.commit()
    target.close()
    result = write_monitor_drift(shifted, tiny_sentiment_run, tmp_path / "out")
    assert "label_shift" in result["alerts"] and result["drifted"]


def test_unknown_version_and_missing_database_are_user_errors(monitored, tmp_path):
    with pytest.raises(UserError, match="no documents scored by model nope"):
        score_stats(monitored, model_version="nope")
    with pytest.raises(UserError, match="does not exist"):
        score_stats(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(UserError):
        score_stats(tmp_path / "junk.db")


def test_the_report_estimates_accuracy_from_the_scores_and_alerts_when_unsure(monitored, tiny_sentiment_run, tmp_path):
    from core.evaluation.drift_baseline import load_drift_baseline

    fit = load_drift_baseline(tiny_sentiment_run).accuracy
    assert fit is not None and fit.fitted_from == "every validation row at training time"
    result = write_monitor_drift(monitored, tiny_sentiment_run, tmp_path / "as-is")
    estimate = result["accuracy_estimate"]
    stored = sqlite3.connect(monitored).execute("SELECT MAX(p_negative, p_neutral, p_positive) FROM scores").fetchall()
    assert estimate["rows"] == len(stored) and estimate["validation_accuracy"] == fit.validation_accuracy
    assert estimate["estimate"] == sum(c >= fit.threshold for (c,) in stored) / len(stored)
    assert "## Accuracy estimated without labels" in (tmp_path / "as-is" / "drift.md").read_text()
    unsure = tmp_path / "unsure.db"  # every document scored a near coin flip: below any fitted threshold
    sqlite3.connect(monitored).backup(target := sqlite3.connect(unsure))
    target.execute("UPDATE scores SET p_negative=0.34, p_neutral=0.33, p_positive=0.33")
    target.commit()
    target.close()
    shifted = write_monitor_drift(unsure, tiny_sentiment_run, tmp_path / "unsure")
    expect_alert = fit.threshold > 0.34 and fit.validation_accuracy > 0.05
    assert ("accuracy_estimate" in shifted["alerts"]) is expect_alert and expect_alert
    assert "**alert:" in (tmp_path / "unsure" / "drift.md").read_text()
