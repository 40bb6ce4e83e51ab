"""The static tier in the planner and the frontier: its prior (offset to the probe), its time parts,
`pending` until benchmarks/static_tier.py has run, and its points and prior from that record."""

from __future__ import annotations

import json

import pytest

from core.plan.predict import load_priors, predicted_accuracy, static_times
from tests.conftest import CARD, TRANSFER, write_csv


def _priors_file(tmp_path, *, static: float | None):
    records = [{"system": "full", "measure": "gap_closure", "value": 0.2, "num_labels": 3, "train_rows": 100,
                "record": "x"},
               {"system": "lora", "measure": "gap_closure", "value": 0.1, "num_labels": 3, "train_rows": 100,
                "record": "x"},
               {"system": "ia3", "measure": "offset_vs_full", "value": -0.03, "num_labels": 3, "train_rows": 100,
                "record": "x"}]
    if static is not None:
        records.append({"system": "static", "measure": "offset_vs_probe", "value": static, "num_labels": 3,
                        "train_rows": 100, "record": "benchmarks/results/static_tier.json"})
    pending = [] if static is not None else [{"system": "static", "measure": "offset_vs_probe",
                                              "measured_by": "python -m benchmarks.static_tier"}]
    path = tmp_path / "priors.json"
    path.write_text(json.dumps({"source": "hand-made", "records": records, "pending": pending}))
    return path


def test_the_static_prior_is_the_probe_plus_its_recorded_offsets(tmp_path):
    priors = load_priors(_priors_file(tmp_path, static=-0.04))
    assert priors["offset_vs_probe"]["static"]["mean"] == -0.04 and priors["pending"] == []
    assert predicted_accuracy("static", 0.90, priors) == pytest.approx((0.86, 0.86, 0.86))
    assert predicted_accuracy("static", 0.02, priors) == (0.0, 0.0, 0.0)  # clipped at 0


def test_without_a_static_record_the_prior_is_pending(tmp_path):
    priors = load_priors(_priors_file(tmp_path, static=None))
    assert "static" not in priors["offset_vs_probe"]
    assert priors["pending"][0]["measured_by"] == "python -m benchmarks.static_tier"
    assert load_priors()["pending"] or "static" in load_priors()["offset_vs_probe"]  # the packaged file says which


def test_static_time_adds_distillation_encoding_and_the_probe_head():
    s = {"distill_seconds": 30.0, "times": {"encode": 0.5, "save": 0.2}}
    e = {"times": {"c_search": 4.0, "head_fit": 1.0, "setup": 2.0, "drift": 0.1, "plots": 0.3}}
    t = static_times(s, e, load_s=0.4)
    assert t["train_seconds"] == 30.0 + 0.5 + 4.0 + 1.0
    assert t["run_seconds"] == pytest.approx((0.4 + 2.0) + t["train_seconds"] + (0.2 + 0.1 + 0.3))


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]
    return write_csv(tmp_path_factory.mktemp("plan-static") / "tickets.csv", rows * 5)


def test_the_plan_leaves_the_static_tier_out_while_its_prior_is_pending(toy_csv, tmp_path, monkeypatch):
    from core.plan import planner

    path = _priors_file(tmp_path, static=None)
    monkeypatch.setattr(planner, "load_priors", lambda: load_priors(path))
    result = planner.make_plan(planner.plan_config({"data": str(toy_csv), "backbone": "tiny", "systems": "probe,static",
                                                    "timing_seconds": "0.2"}), progress=False)
    assert [p["system"] for p in result["predictions"]] == ["probe"]
    from core.plan.report import format_plan

    assert "static" in result["skipped"] and "left out" in format_plan(result)


def test_the_plan_predicts_the_static_tier_from_its_prior_and_measured_parts(toy_csv, tmp_path, monkeypatch):
    pytest.importorskip("model2vec", reason="the static tier needs the static extra: pip install -e '.[static]'")
    from core.plan import planner

    path = _priors_file(tmp_path, static=-0.05)
    monkeypatch.setattr(planner, "load_priors", lambda: load_priors(path))
    result = planner.make_plan(planner.plan_config({"data": str(toy_csv), "backbone": "tiny", "systems": "probe,static",
                                                    "timing_seconds": "0.2", "target": "0.3"}), progress=False)
    preds = {p["system"]: p for p in result["predictions"]}
    assert preds["static"]["how"] == "prior" and preds["probe"]["how"] == "measured"
    assert preds["static"]["accuracy"] == pytest.approx(max(0.0, preds["probe"]["accuracy"] - 0.05))
    assert preds["static"]["train_seconds"] > 0 and preds["static"]["p50_ms"] > 0
    parts = result["time_parts"]["static"]
    assert parts["run_seconds"] == pytest.approx(sum(parts["parts"].values()))
    run_dir = tmp_path / "out"
    result["recommended_recipe"] = "static"  # --run trains the static recipe on the plan's data
    report, _ = planner.run_recommended(result, planner.plan_config({"data": str(toy_csv), "backbone": "tiny"}),
                                        run_dir, progress=False)
    assert report["config"]["mode"] == "static" and result["outcome"]["system"] == "static"


def test_the_frontier_takes_the_static_record_as_points_a_runtime_and_a_prior(monkeypatch):
    from benchmarks import frontier
    from core.foundation.cost import Prices

    def system(key, acc, tps):
        return {"key": key, "system": "static (model2vec from MiniLM)" if key == "static" else key, "accuracy": acc,
                "texts_per_second": tps, "busy_cores": 1.0, "p50_ms": 0.1, "train": {"cpu_seconds": 36.0}}

    record = {"domains": {"support": {"data": {"num_labels": 77, "train_used": 9000},
                                      "systems": [system("static", 0.80, 20000.0), system("probe-torch", 0.90, 300.0)]}}}
    monkeypatch.setattr(frontier, "_read", lambda name: record if name == "static_tier" else None)
    [point] = frontier.support_points()
    assert point["runtime"] == "static" and point["train_core_hours"] == 36.0 / 3600 and point["accuracy"] == 0.80
    [row] = frontier.runtime_rows(Prices())
    assert row["runtime"] == "static" and row["texts_per_second"] == 20000.0
    priors = frontier.priors([])
    [static] = [r for r in priors["records"] if r["system"] == "static"]
    assert static["value"] == pytest.approx(0.80 - 0.90) and static["measure"] == "offset_vs_probe"
    assert static["domain"] == "support"  # what benchmarks/plan_validation.py leaves out for a support set
    assert priors["pending"] == []
