"""Hot swap: the service follows a model registry's champion under load, without failing a request."""

import threading
import time
from itertools import groupby

import httpx
import pytest
from fastapi.testclient import TestClient

from core.mlops.feedback import PredictionLog
from core.mlops.registry import ModelRegistry
from core.serving.app import ServiceLimits
from solutions.support.deployment import Deployment, RegistryWatcher, load_served, model_version
from solutions.support.router import IntentRouter
from solutions.support.service import create_app
from tests.http_helpers import running

LIMITS = ServiceLimits(max_chars=200, max_batch=8)


def make_router(path):
    return IntentRouter.from_run(path)


@pytest.fixture
def registry(served_run, tmp_path):
    """v0001 champion, v0002 a candidate (copies of one run: different versions, same weights)."""
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(served_run, status="champion", by="test", reason="first")
    registry.register(served_run, parent="v0001", reason="candidate")
    return registry


def _follow(registry, interval=0.05):
    deployment = Deployment(load_served(registry.champion_path(), make_router, registry.champion()))
    return deployment, RegistryWatcher(registry, deployment, lambda path, v: load_served(path, make_router, v), interval)


def _wait_for(condition, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_promotion_and_a_rollback_under_load_fail_no_request(registry, tmp_path):
    deployment, watcher = _follow(registry)
    prediction_log = PredictionLog(tmp_path / "predictions.db")
    app = create_app(deployment, limits=LIMITS, prediction_log=prediction_log, watcher=watcher)
    stop, seen, errors = threading.Event(), [[] for _ in range(4)], []

    def fire(base, versions):
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                try:
                    reply = client.post("/v1/route", json={"texts": ["my card was declined", "transfer abroad"]})
                    if reply.status_code != 200:
                        errors.append(reply.status_code)
                        continue
                    versions.extend(r.get("model_version") for r in reply.json()["routes"])
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    def count(version):
        return sum(v == version for versions in seen for v in versions)

    with running(app, LIMITS) as base:
        threads = [threading.Thread(target=fire, args=(base, versions)) for versions in seen]
        for thread in threads:
            thread.start()
        try:
            _wait_for(lambda: count("v0001") >= 20, "traffic on v0001")
            registry.promote("v0002", by="test", reason="hot swap test")
            _wait_for(lambda: count("v0002") >= 20, "traffic on v0002 after the promotion")
            before = count("v0001")
            assert registry.rollback(by="test") == "v0001"
            _wait_for(lambda: count("v0001") >= before + 20, "traffic on v0001 after the rollback")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        metrics = httpx.get(f"{base}/metrics").text
    prediction_log.close()
    assert errors == []
    assert all(v in ("v0001", "v0002") for versions in seen for v in versions)  # every response names its model
    for versions in seen:  # each client saw v0001, then v0002, then v0001 again: no flip-flop
        order = [k for k, _ in groupby(versions)]
        assert order in (["v0001", "v0002", "v0001"], ["v0001", "v0002"], ["v0001"], ["v0002", "v0001"]), order
    assert 'verticals_model_reloads_total{outcome="swapped"} 2.0' in metrics
    assert 'verticals_model_served{model_version="v0001"} 1.0' in metrics
    assert 'verticals_model_served{model_version="v0002"}' not in metrics
    logged = PredictionLog(tmp_path / "predictions.db").model_versions()
    assert set(logged) == {"v0001", "v0002"}


def test_a_champion_that_fails_to_load_keeps_the_old_model(registry, caplog):
    deployment, watcher = _follow(registry)
    assert watcher.check() is False  # the champion is the served model: nothing to load
    outcomes = []
    watcher.on_reload = outcomes.append
    broken = registry.register(registry.version_path("v0002"), reason="will break")
    (registry.version_path(broken) / "model" / "head.safetensors").write_bytes(b"not safetensors")
    registry.promote(broken, by="test", reason="broken on purpose")
    assert watcher.check() is False and deployment.current.version == "v0001"
    assert f"could not load champion {broken}" in caplog.text and "still serving v0001" in caplog.text
    assert watcher.check() is False and outcomes == ["failed"]  # not retried until the registry changes
    registry.rollback(by="test")  # back to v0001: already served, nothing to load
    assert watcher.check() is False and deployment.current.version == "v0001"
    registry.promote("v0002", by="test", reason="a good one")
    assert watcher.check() is True and deployment.current.version == "v0002" and outcomes == ["failed", "swapped"]


def test_model_version_is_the_registry_version_or_a_stable_hash(registry, served_run):
    assert model_version(registry.version_path("v0002")) == "v0002"
    assert model_version(registry.version_path("v0002") / "model") == "v0002"
    plain = model_version(served_run)
    assert plain == model_version(served_run) and plain.startswith(served_run.name + "-")
    report = served_run / "report.json"
    saved = report.read_bytes()
    try:
        report.write_bytes(saved.replace(b"{", b'{"retrained": true, ', 1))
        assert model_version(served_run) != plain
    finally:
        report.write_bytes(saved)


def test_the_cli_serves_a_registry_champion_and_logs(registry, tmp_path, monkeypatch, capsys):
    import core.serving.server
    from verticals.cli import main

    seen = {}

    def serve(app, host, port, limits=None):  # instead of uvicorn: call the app the command built
        with TestClient(app) as client:
            seen["route"] = client.post("/v1/route", json={"text": "card declined"}).json()
            seen["ready"] = client.get("/readyz").json()
            seen["accuracy_drop"] = app.state.drift.thresholds.accuracy_drop

    monkeypatch.setattr(core.serving.server, "serve", serve)
    log = tmp_path / "log.db"
    assert main(["serve", "--registry", str(registry.path), "--log", str(log), "--reload-interval", "0.1",
                 "--max-accuracy-drop", "0.03"]) == 0
    assert "champion v0001" in capsys.readouterr().out
    assert seen["accuracy_drop"] == 0.03  # the flag reaches the drift monitor's alert
    assert main(["serve", "--registry", str(registry.path), "--max-accuracy-drop", "5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert seen["route"]["model_version"] == "v0001" and seen["ready"]["follows_registry"] is True
    assert PredictionLog(log).model_versions() == {"v0001": 1}
    assert main(["serve", str(registry.version_path("v0001")), "--registry", str(registry.path)]) == 2
    assert main(["serve", "--registry", str(tmp_path)]) == 2
    assert "is not a model registry" in capsys.readouterr().err
