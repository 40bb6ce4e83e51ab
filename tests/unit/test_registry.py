"""core.mlops.registry: versions, lineage, status transitions, promote / rollback, the state token, the lock."""

from __future__ import annotations

import json
import threading

import pytest

from core.foundation.errors import UserError
from core.mlops.registry import ModelRegistry


def fake_run(path, accuracy: float):
    """The files register() reads: report.json with metrics and cost, model/classifier.json."""
    (path / "model").mkdir(parents=True)
    (path / "model" / "classifier.json").write_text("{}")
    (path / "report.json").write_text(json.dumps({
        "metrics": {"test": {"n": 10, "accuracy": accuracy, "macro_f1": accuracy, "per_class": {}}},
        "cost": {"cpu_seconds": 1.5, "wall_seconds": 2.0}, "fit": {"train_seconds": 1.25}}))
    (path / "checkpoint").mkdir()  # never copied into the registry
    return path


@pytest.fixture
def runs(tmp_path):
    return [fake_run(tmp_path / f"run{i}", acc) for i, acc in enumerate((0.5, 0.6, 0.7))]


def test_register_copies_the_run_and_records_lineage_metrics_and_cost(tmp_path, runs):
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.champion() is None and reg.champion_path() is None and reg.versions() == []
    v1 = reg.register(runs[0], status="champion", by="ana", reason="deployed")
    v2 = reg.register(runs[1], parent=v1, gate={"promote": False, "reasons": ["x"]}, status="rejected")
    assert (v1, v2) == ("v0001", "v0002")
    assert reg.version_path(v2) == tmp_path / "reg" / "runs" / "v0002"
    assert (reg.version_path(v2) / "report.json").is_file() and not (reg.version_path(v2) / "checkpoint").exists()
    second = reg.versions()[1]
    assert second["parent"] == "v0001" and second["status"] == "rejected" and second["gate"]["promote"] is False
    assert second["metrics"] == {"test": {"n": 10, "accuracy": 0.6, "macro_f1": 0.6}}
    assert second["cost"] == {"cpu_seconds": 1.5, "wall_seconds": 2.0, "train_seconds": 1.25}
    first = reg.versions()[0]
    assert first["status"] == "champion" and first["promoted_by"] == "ana" and first["reason"] == "deployed"
    assert reg.champion() == "v0001" and reg.champion_path() == reg.version_path("v0001")
    assert reg.find(runs[1]) == "v0002" and reg.find(reg.version_path("v0001")) == "v0001"
    assert reg.find(tmp_path) is None
    on_disk = json.loads((tmp_path / "reg" / "registry.json").read_text())
    assert on_disk["champion"] == "v0001" and [v["version"] for v in on_disk["versions"]] == ["v0001", "v0002"]


def test_promote_and_rollback_walk_the_champion_stack(tmp_path, runs):
    reg = ModelRegistry(tmp_path / "reg")
    v1 = reg.register(runs[0], status="champion", by="ana")
    v2, v3 = reg.register(runs[1], parent=v1), reg.register(runs[2], parent=v1)
    tokens = {reg.state_token()}
    reg.promote(v2, by="bo", reason="gate passed")
    tokens.add(reg.state_token())
    reg.promote(v3, by="cy", reason="better")
    tokens.add(reg.state_token())
    status = {v["version"]: v["status"] for v in reg.versions()}
    assert status == {"v0001": "retired", "v0002": "retired", "v0003": "champion"}
    assert reg.rollback(by="dee") == "v0002"
    assert reg.rollback(by="dee", reason="still bad") == "v0001"  # two promotions back, no flip-flop
    tokens.add(reg.state_token())
    assert len(tokens) == 4  # every champion change changes the token
    with pytest.raises(UserError, match="nothing to roll back to"):
        reg.rollback(by="dee")
    events = reg.events()
    assert [e["event"] for e in events if e["event"] != "register"] == ["promote", "promote", "promote", "rollback",
                                                                         "rollback"]
    assert events[-1] == {**events[-1], "version": "v0001", "previous": "v0002", "by": "dee", "reason": "still bad"}
    record = reg.versions()[0]
    assert record["promoted_by"] == "dee" and record["status"] == "champion"


def test_status_moves_only_along_the_allowed_transitions(tmp_path, runs):
    reg = ModelRegistry(tmp_path / "reg")
    v1 = reg.register(runs[0], status="champion", by="ana")
    with pytest.raises(UserError, match="already the champion"):
        reg.promote(v1, by="ana", reason="again")
    v2 = reg.register(runs[1], parent=v1)
    reg.reject(v2, by="ana", reason="worse")
    with pytest.raises(UserError, match="rejected: it can become champion, not rejected"):
        reg.reject(v2, by="ana", reason="twice")
    reg.promote(v2, by="ana", reason="a person overrides the gate")  # rejected -> champion is allowed
    assert reg.champion() == v2
    with pytest.raises(UserError, match="unknown version 'v0009'"):
        reg.promote("v0009", by="ana", reason="")
    with pytest.raises(UserError, match="unknown version 'v0042'"):
        reg.register(runs[2], parent="v0042")
    with pytest.raises(UserError, match="starts as candidate, rejected or champion"):
        reg.register(runs[2], status="retired")
    with pytest.raises(UserError, match="not a finished classifier run"):
        reg.register(tmp_path / "nothing")
    assert len(reg.versions()) == 2  # nothing half-registered by the refusals


def test_a_directory_that_is_not_a_registry_is_refused(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no registry.json"):
        ModelRegistry(tmp_path / "busy")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        ModelRegistry(tmp_path / "file")
    reg = ModelRegistry(tmp_path / "reg")
    (reg.path / "registry.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        ModelRegistry(tmp_path / "reg").versions()


def test_concurrent_registrations_under_the_lock_all_land_with_distinct_versions(tmp_path, runs):
    regs = [ModelRegistry(tmp_path / "reg") for _ in range(6)]  # separate objects, as separate processes would be
    got, errors = [], []

    def add(reg, run):
        try:
            got.append(reg.register(run))
        except Exception as exc:  # noqa: BLE001 - collected and asserted empty
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(reg, runs[i % 3])) for i, reg in enumerate(regs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == [f"v{i:04d}" for i in range(1, 7)]
    assert [v["version"] for v in ModelRegistry(tmp_path / "reg").versions()] == sorted(got)
    assert not [p for p in (tmp_path / "reg" / "runs").iterdir() if p.name.startswith(".incoming")]


def test_state_token_and_champion_path_follow_another_writer(tmp_path, runs):
    reader, writer = ModelRegistry(tmp_path / "reg"), ModelRegistry(tmp_path / "reg")
    writer.register(runs[0], status="champion", by="a")
    before = reader.state_token()
    writer.register(runs[1], parent="v0001")  # a candidate: the champion does not change
    assert reader.state_token() == before
    writer.promote("v0002", by="a", reason="r")
    assert reader.state_token() != before and reader.champion_path() == writer.version_path("v0002")
