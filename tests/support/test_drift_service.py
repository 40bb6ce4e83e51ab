"""Drift and health of the served model: /metrics gauges, GET /v1/drift, the alert log line, and
`verticals support drift` from the prediction log."""

import json
import time
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.mlops.feedback import PredictionLog
from solutions.support.deployment import Deployment, ServedModel, load_baseline, model_version
from solutions.support.monitoring import MonitorSettings
from solutions.support.router import IntentRouter
from solutions.support.service import create_app
from tests.support.conftest import BASELINE_TEXTS

# The baseline's texts in the order traffic mixes them (a batch of one intent only is a label shift).
HALF = len(BASELINE_TEXTS) // 2
MIXED = [t for pair in zip(BASELINE_TEXTS[:HALF], BASELINE_TEXTS[HALF:]) for t in pair]
FAST = MonitorSettings(interval_s=0.05, every_rows=8, min_interval_s=0, window_rows=len(BASELINE_TEXTS),
                       min_rows=len(BASELINE_TEXTS))
# Nothing like the support texts: other words, other lengths.
DRIFTED = [f"{a} {b} {c} {i}" for i, (a, b, c) in enumerate(zip(
    ["zebra", "violin", "glacier", "poetry", "tomato", "nebula"] * 10,
    ["quartz", "opera", "lantern", "meadow", "rocket", "velvet"] * 10,
    ["whisper", "harbor", "saffron", "tundra", "cobalt", "orchid"] * 10))]


@pytest.fixture(scope="module")
def router(served_run):
    return IntentRouter.from_run(served_run)


def _served(router, run, **changes):
    return replace(ServedModel(router, model_version(run), load_baseline(run, router.settings), str(run)), **changes)


def _route_all(client, texts):
    for start in range(0, len(texts), 8):
        assert client.post("/v1/route", json={"texts": texts[start:start + 8]}).status_code == 200


def _drift_when(client, condition, timeout=30):
    deadline = time.time() + timeout
    while True:
        body = client.get("/v1/drift").json()
        if condition(body):
            return body
        assert time.time() < deadline, f"drift report never got there: {body}"
        time.sleep(0.05)


def _gauge(metrics: str, name: str, version: str) -> float | None:
    prefix = f'{name}{{model_version="{version}"}} '
    return next((float(line[len(prefix):]) for line in metrics.splitlines() if line.startswith(prefix)), None)


def test_drift_is_quiet_in_distribution_and_alerts_on_new_traffic(router, served_run, caplog):
    served = _served(router, served_run)
    with TestClient(create_app(served, monitoring=FAST)) as client:
        assert client.get("/v1/drift").json()["report"] is None
        _route_all(client, MIXED)
        quiet = _drift_when(client, lambda b: b["report"] is not None and b["report"]["n"] == len(BASELINE_TEXTS))
        assert quiet["status"] == "ok" and quiet["model_version"] == served.version, quiet
        assert quiet["report"]["psi_confidence"] < 0.05 and quiet["report"]["label_shift"] < 0.05
        assert quiet["report"]["domain_auc"] < 0.75
        metrics = client.get("/metrics").text
        assert _gauge(metrics, "verticals_drift_alert", served.version) == 0.0
        assert _gauge(metrics, "verticals_drift_window_rows", served.version) == len(BASELINE_TEXTS)
        assert "drift alert" not in caplog.text

        _route_all(client, DRIFTED)
        # the alert may start while the window is still half baseline; wait for the fully drifted window
        drifted = _drift_when(client, lambda b: b["status"] == "drifted" and b["report"]["domain_auc"] > 0.9)
        assert "domain_auc" in drifted["report"]["alerts"]
        metrics = client.get("/metrics").text
        assert _gauge(metrics, "verticals_drift_alert", served.version) == 1.0
        assert _gauge(metrics, "verticals_drift_domain_auc", served.version) > 0.9
        for name in ("verticals_drift_psi_confidence", "verticals_drift_label_shift", "verticals_fallback_rate",
                     "verticals_drift_mmd"):
            assert _gauge(metrics, name, served.version) is not None, name
    assert f"drift alert for model {served.version}" in caplog.text  # logged once, when it started
    assert caplog.text.count("drift alert for model") == 1


def test_a_swap_starts_a_new_window_and_drops_the_old_gauges(router, served_run):
    deployment = Deployment(_served(router, served_run))
    old = deployment.current.version
    with TestClient(create_app(deployment, monitoring=FAST)) as client:
        _route_all(client, MIXED[:24])
        _drift_when(client, lambda b: b["n"] == 24)
        deployment.swap(_served(router, served_run, version="next"))
        _route_all(client, MIXED[:8])
        fresh = _drift_when(client, lambda b: b["model_version"] == "next")
        assert fresh["n"] == 8 and fresh["report"] is None and fresh["status"].startswith("collecting")
        metrics = client.get("/metrics").text
        assert _gauge(metrics, "verticals_drift_window_rows", "next") == 8
        assert _gauge(metrics, "verticals_drift_window_rows", old) is None


def test_a_failing_drift_computation_never_fails_requests(router, served_run, caplog):
    served = _served(router, served_run)
    wrong = replace(served.baseline, embeddings=np.zeros((len(BASELINE_TEXTS), 3), dtype=np.float32))
    with TestClient(create_app(replace(served, baseline=wrong), monitoring=FAST)) as client:
        for _ in range(3):
            _route_all(client, MIXED[:24])
        deadline = time.time() + 30
        while "drift monitor: unexpected error" not in caplog.text:
            assert time.time() < deadline
            time.sleep(0.05)
        assert client.post("/v1/route", json={"text": "card declined"}).status_code == 200


def test_a_run_without_a_baseline_reports_counts_only(router, served_run):
    with TestClient(create_app(_served(router, served_run, baseline=None), monitoring=FAST)) as client:
        _route_all(client, MIXED[:24])
        body = _drift_when(client, lambda b: b["n"] == 24)
        assert body["report"] is None and "no drift baseline" in body["status"] and body["fallback_rate"] is not None


def test_the_offline_report_compares_the_log_with_the_baseline(router, served_run, tmp_path, capsys):
    from verticals.cli import main

    db = tmp_path / "predictions.db"
    with PredictionLog(db) as prediction_log, \
            TestClient(create_app(_served(router, served_run), prediction_log=prediction_log)) as client:
        _route_all(client, DRIFTED[:40])
    out = tmp_path / "report"
    assert main(["support", "drift", str(db), "--run", str(served_run), "--out", str(out)]) == 0
    result = json.loads((out / "drift.json").read_text())
    assert result["n"] == 40 and result["model_version"] == model_version(served_run)
    assert result["psi_confidence"] is not None and result["domain_auc"] is None  # no embeddings in the log
    assert (out / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "drift.md").read_text()
    assert "no embedding drift" in markdown and "| psi_confidence |" in markdown
    assert "40 logged predictions" in capsys.readouterr().out
    assert main(["support", "drift", str(db), "--run", str(served_run), "--model-version", "v9"]) == 2
    assert "no logged predictions of model v9" in capsys.readouterr().err


def _labelled(metrics: str, name: str, **labels) -> float | None:
    """The value of `name` whose labels include `labels` (any order)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line.split("}")[0] for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_accuracy_estimate_is_served_with_its_rows_and_alerts_past_the_margin(router, served_run, caplog):
    from core.evaluation.accuracy_estimate import AccuracyFit

    served = _served(router, served_run)
    report = json.loads((served_run / "report.json").read_text())
    with TestClient(create_app(served, monitoring=FAST)) as client:
        _route_all(client, MIXED)
        body = _drift_when(client, lambda b: b["report"] is not None and b["report"]["n"] == len(BASELINE_TEXTS))
        estimate = body["accuracy_estimate"]
        assert estimate == body["report"]["accuracy_estimate"] and estimate["method"] == "ATC (max_probability)"
        assert estimate["rows"] == len(BASELINE_TEXTS) and 0 <= estimate["estimate"] <= 1
        assert estimate["validation_accuracy"] == report["metrics"]["validation"]["accuracy"]
        metrics = client.get("/metrics").text
        version = served.version
        assert _labelled(metrics, "verticals_accuracy_estimate", model_version=version, method="atc") \
            == pytest.approx(estimate["estimate"])
        assert _labelled(metrics, "verticals_accuracy_estimate", model_version=version, method="doc") \
            == pytest.approx(estimate["doc_estimate"])
        assert _gauge(metrics, "verticals_accuracy_estimate_rows", version) == len(BASELINE_TEXTS)
        assert _gauge(metrics, "verticals_accuracy_validation", version) == pytest.approx(estimate["validation_accuracy"])
    # a threshold above every confidence: nothing counts as right, far more than 5 points down
    sure = AccuracyFit(threshold=1.01, validation_accuracy=0.9, validation_mean_confidence=0.9, n_validation=100)
    with TestClient(create_app(replace(served, baseline=replace(served.baseline, accuracy=sure)),
                               monitoring=FAST)) as client:
        _route_all(client, MIXED)
        body = _drift_when(client, lambda b: b["report"] is not None and b["report"]["n"] == len(BASELINE_TEXTS))
        assert body["accuracy_estimate"]["estimate"] == 0.0 and body["accuracy_estimate"]["alert"]
        assert "accuracy_estimate" in body["report"]["alerts"] and body["status"] == "drifted"
        assert _gauge(client.get("/metrics").text, "verticals_drift_alert", served.version) == 1.0
    assert "accuracy_estimate=0.000 (validation 0.900)" in caplog.text


def test_without_a_baseline_the_accuracy_estimate_is_not_available(router, served_run):
    with TestClient(create_app(_served(router, served_run, baseline=None), monitoring=FAST)) as client:
        _route_all(client, MIXED[:24])
        body = _drift_when(client, lambda b: b["n"] == 24)
        assert body["accuracy_estimate"]["estimate"] is None
        assert body["accuracy_estimate"]["status"].startswith("not available: no drift baseline")
        assert "verticals_accuracy_estimate{" not in client.get("/metrics").text


def test_the_offline_report_gives_the_verdict_on_the_estimated_accuracy(router, served_run, tmp_path):
    from solutions.support.drift_report import write_drift_report

    version = model_version(served_run)
    row = {"text": "my card", "intent": "card", "fallback_reason": None}
    for confidence, alerting in ((0.999, False), (0.01, True)):  # every row sure / every row unsure
        db = tmp_path / f"log-{confidence}.db"
        with PredictionLog(db) as prediction_log:
            prediction_log.log([dict(row, confidence=confidence) for _ in range(50)], version, label_key="intent")
        result = write_drift_report(db, served_run, tmp_path / f"out-{confidence}")
        assert ("accuracy_estimate" in result["alerts"]) is alerting
        assert result["accuracy_estimate"]["estimate"] == (0.0 if alerting else 1.0)
        markdown = (tmp_path / f"out-{confidence}" / "drift.md").read_text()
        assert "## Accuracy estimated without labels" in markdown and ("**alert:" in markdown) is alerting
