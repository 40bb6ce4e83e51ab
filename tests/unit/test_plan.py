"""core.plan.planner: the pure parts by hand-checkable values, then one planner run on a toy file with
the tiny backbone (module-scoped, shared by the API and CLI checks)."""

import json
import math

import numpy as np
import pytest

from core.foundation.errors import UserError
from core.plan.choose import Prediction, cheapest, meets, pareto
from core.plan.planner import parse_duration, plan_config
from core.plan.report import format_outcome, outcome
from core.plan.predict import curve_accuracy, fit_learning_curve, finetune_accuracy, finetune_seconds, labels_for, labels_needed, load_priors, padded_tokens_per_step, predicted_accuracy, run_steps, step_time_line
from tests.conftest import CARD, TRANSFER, write_csv


def test_durations():
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration("1.5") == 1.5
    assert parse_duration("5ms") == pytest.approx(0.005) and parse_duration("90s") == 90
    with pytest.raises(UserError, match="not a duration"):
        parse_duration("fast")


def test_power_law_is_recovered_and_inverted():
    n = [100, 200, 400, 800]
    curve = fit_learning_curve(n, [0.95 - 2 * x ** -0.5 for x in n])
    assert curve["kind"] == "power"
    assert curve["params"] == pytest.approx([0.95, 2.0, 0.5], abs=1e-3)
    assert curve_accuracy(curve, 1600) == pytest.approx(0.95 - 2 / 40, abs=1e-3)
    assert labels_for(curve, 0.90) == pytest.approx(1600, rel=1e-2)
    assert labels_for(curve, 0.96) is None  # above the ceiling


def test_two_points_give_a_line_in_log_n():
    curve = fit_learning_curve([10, 100], [0.5, 0.7])
    assert curve["kind"] == "log"
    assert curve_accuracy(curve, 1000) == pytest.approx(0.9)
    assert labels_for(curve, 0.8) == pytest.approx(10 ** 2.5)


def test_finetune_prior_closes_a_share_of_the_probe_error():
    assert finetune_accuracy(0.9, 0.25) == pytest.approx(0.9 + 0.25 * 0.1)
    priors = {"gap_closure": {"full": {"mean": 0.2, "min": 0.1, "max": 0.3}},
              "offset_vs_full": {"ia3": {"mean": -0.02, "min": -0.03, "max": -0.01}}}
    assert predicted_accuracy("full", 0.8, priors) == pytest.approx((0.84, 0.82, 0.86))
    assert predicted_accuracy("ia3", 0.8, priors) == pytest.approx((0.82, 0.79, 0.85))
    with pytest.raises(UserError, match="no prior"):
        predicted_accuracy("lora", 0.8, priors)


def test_finetune_time_adds_fixed_work_steps_and_validations():
    seconds = finetune_seconds(fixed_s=10, step_line=(0.5, 0.001), step_tokens=[1000, 2000], validations=3,
                               validation_s=4, checkpoint_s=1)
    assert seconds == pytest.approx(10 + (0.5 + 1.0) + (0.5 + 2.0) + 3 * (4 + 1))


def test_run_steps_count_a_validation_per_epoch_and_at_the_end():
    assert run_steps(264, 32, 3) == (27, 3)  # 9 steps an epoch
    assert run_steps(100, 32, 1.5) == (6, 2)  # 4 an epoch: validation at 4 and at the last step, 6
    assert run_steps(100, 32, 3, eval_every=5) == (12, 3)  # 5, 10, 12


def test_padded_tokens_replay_the_training_batches():
    lengths = [3, 5, 2, 7, 4]
    # no length grouping under 4 batches: batch 2 of the epoch pads to its longest text
    tokens = padded_tokens_per_step(lengths, 2, seed=0, steps=4, group_by_length=True)
    from core.classify.train import epoch_order

    order = epoch_order(np.asarray(lengths), 2, 0, 0, True)
    assert tokens[0] == 2 * max(lengths[order[0]], lengths[order[1]])
    assert tokens[2] == 1 * lengths[order[4]]  # the epoch's last, short batch
    assert tokens.sum() > 0 and len(tokens) == 4


def test_step_time_line_ignores_a_slow_step():
    x = [1000, 2000, 3000, 4000, 5000]
    t = [0.1 + 0.001 * v for v in x]
    t[2] += 5.0  # one step held up by a checkpoint write elsewhere
    a, b = step_time_line(t, x)
    assert a == pytest.approx(0.1, abs=1e-9) and b == pytest.approx(0.001)
    assert step_time_line([1.0, 1.2], [100, 100]) == (0.0, pytest.approx(0.011))  # one token count: s/token


def test_outcome_sets_predicted_beside_actual():
    result = {"recommended_recipe": "probe", "predictions": [
        {"system": "probe", "accuracy": 0.9, "accuracy_low": 0.88, "accuracy_high": 0.92, "train_seconds": 12.0,
         "run_seconds": 30.0}]}
    report = {"metrics": {"validation": {"accuracy": 0.91}, "test": {"accuracy": 0.87}}, "cost": {"wall_seconds": 10.0}}
    o = outcome(result, report, 40.0)
    assert o["error"]["validation_points"] == pytest.approx(-1.0) and o["error"]["test_points"] == pytest.approx(3.0)
    assert o["error"]["train_seconds"] == pytest.approx(0.2) and o["error"]["run_seconds"] == pytest.approx(-0.25)
    assert "test 87.0% (+3.0 points)" in format_outcome(o)


def _p(system, acc, usd, seconds=1.0, p50=1.0, per_million=1.0):
    return Prediction(system, "measured", acc, acc, acc, seconds, 0.0, usd, 0.0, p50, per_million)


def test_cheapest_meeting_target_and_constraints():
    preds = [_p("tfidf", 0.85, 0.0), _p("probe", 0.91, 0.01, p50=8), _p("full", 0.93, 0.5, seconds=4000, p50=8)]
    assert cheapest(preds, 0.9).system == "probe"
    assert cheapest(preds, 0.92).system == "full"
    assert cheapest(preds, 0.92, budget_s=1800) is None
    assert cheapest(preds, 0.9, latency_s=0.005) is None
    assert meets(preds[2], 0.92, 1800, 0.005) == ["training 4000 s > budget 1800 s", "p50 8.0 ms > 5 ms"]


def test_a_prior_whose_range_reaches_the_target_is_what_run_trains_when_none_is_predicted_to():
    lora = Prediction("lora", "prior", 0.954, 0.945, 0.964, 400.0, 0.0, 0.01, 0.0, 8.0, 1.0)  # the case
    preds = [_p("probe", 0.93, 0.001), lora]
    assert cheapest(preds, 0.96) is None and cheapest(preds, 0.96, optimistic=True).system == "lora"
    assert meets(lora, 0.96, None, None) == ["accuracy 95.4% < 96.0%"] and meets(lora, 0.96, None, None, True) == []
    assert cheapest(preds, 0.97, optimistic=True) is None  # above every range: nothing to try
    assert cheapest(preds, 0.96, budget_s=100, optimistic=True) is None  # the range does not lift the budget


def test_the_labels_needed_are_read_only_within_four_times_the_fitted_labels():
    n = [100, 200, 400, 800]
    curve = fit_learning_curve(n, [0.95 - 2 * x ** -0.5 for x in n])
    near = labels_needed(curve, 0.90, 800)
    assert near["labels"] == pytest.approx(1600, rel=1e-2) and "about 1,6" in near["note"]
    far = labels_needed(curve, 0.949, 800)  # the curve says millions: not printed as a number
    assert far["labels"] is None and "more than 3,200 labels" in far["note"]
    assert labels_needed(curve, 0.96, 800) == {"labels": None,
                                              "note": "the probe's learning curve levels off below the target"}


def test_pareto_points():
    assert pareto([(1, 0.5), (2, 0.7), (3, 0.6), (0.5, 0.5)]) == [False, True, False, True]


def test_priors_are_the_spread_of_their_records(tmp_path):
    def record(system, measure, value, num_labels):
        return {"system": system, "measure": measure, "value": value, "num_labels": num_labels, "train_rows": 100,
                "record": "benchmarks/results/x.json"}

    records = [record("full", "gap_closure", 0.2, 77), record("full", "gap_closure", 0.4, 3),
               record("lora", "gap_closure", 0.1, 77), record("ia3", "offset_vs_full", -0.03, 3)]
    (tmp_path / "p.json").write_text(json.dumps({"source": "hand-made", "records": records}))
    priors = load_priors(tmp_path / "p.json")
    assert priors["gap_closure"]["full"] == pytest.approx({"mean": (0.2 + 0.4) / 2, "min": 0.2, "max": 0.4, "n": 2})
    assert priors["gap_closure"]["lora"]["mean"] == 0.1 and priors["offset_vs_full"]["ia3"]["n"] == 1
    assert priors["records"] == records and priors["source"] == "hand-made"
    (tmp_path / "q.json").write_text(json.dumps({"records": records + [record("full", "speedup", 2.0, 3)]}))
    with pytest.raises(UserError, match="regenerate"):  # a measure the planner does not know
        load_priors(tmp_path / "q.json")


def test_bad_settings_and_priors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown key"):
        plan_config({"data": "x.csv", "taget": "0.9"})
    with pytest.raises(UserError, match="duration"):
        plan_config({"data": "x.csv", "budget": "soon"})
    with pytest.raises(UserError, match="unknown system"):
        plan_config({"data": "x.csv", "systems": "probe,gpt"})
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(UserError, match="regenerate"):
        load_priors(tmp_path / "p.json")
    assert load_priors()["gap_closure"]["full"]["mean"] > 0  # the packaged priors load


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]
    return write_csv(tmp_path_factory.mktemp("plan") / "tickets.csv", rows * 5)


@pytest.fixture(scope="module")
def planned(toy_csv, tmp_path_factory):
    import verticals

    out = tmp_path_factory.mktemp("plan_out")
    return out, verticals.plan(toy_csv, target=0.5, out=out, backbone="tiny", calibration_steps=6,
                                timing_seconds=0.2)


def test_plan_predicts_every_system_and_recommends_the_cheapest(planned):
    out, result = planned
    preds = {p["system"]: p for p in result["predictions"]}
    # the static tier is predicted once benchmarks/static_tier.py has given it a prior (test_plan_static.py)
    assert [s for s in preds if s != "static"] == ["tfidf", "zeroshot", "probe", "ia3", "lora", "full"]
    for p in preds.values():
        assert 0 <= p["accuracy_low"] <= p["accuracy"] <= p["accuracy_high"] <= 1
        assert p["train_seconds"] > 0 and p["p50_ms"] > 0 and math.isfinite(p["usd_per_million"])
        assert p["run_seconds"] >= p["train_seconds"]  # the run adds setup and its final evaluation
    for name in ("probe", "full"):
        parts = result["time_parts"][name]
        assert parts["run_seconds"] == pytest.approx(sum(parts["parts"].values()))
    # 2 labels and 48 rows lie outside the priors' records: each fine-tune's accuracy is its trial's
    assert {preds[s]["how"] for s in ("ia3", "lora", "full")} == {"trial"}
    assert all(result["trials"][s]["steps_run"] == result["time_parts"][s]["steps"] for s in ("ia3", "lora", "full"))
    ok = [p for p in preds.values() if p["accuracy"] >= 0.5]
    assert result["recommendation"] == min(ok, key=lambda p: (p["train_usd"], p["usd_per_million"]))["system"]
    assert len(result["learning_curve"]["points"]) == 4 and result["time_parts"]["full"]["steps"] > 0
    assert json.loads((out / "plan.json").read_text())["recommendation"] == result["recommendation"]
    assert (out / "plan.png").stat().st_size > 0


def test_cli_plan_runs_the_recommended_recipe(toy_csv, tmp_path, capsys):
    from verticals.cli import main

    out = tmp_path / "p"
    code = main(["plan", f"data={toy_csv}", "backbone=tiny", "target=0.3", "systems=tfidf,probe", "timing_seconds=0.2", "--out", str(out),
                 "--run", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "recommendation:" in printed and "prior = from our benchmark records" in printed
    assert (out / "run-probe" / "report.json").is_file()  # tfidf is no run: --run trains the cheapest recipe
    stored = json.loads((out / "plan.json").read_text())["outcome"]
    report = json.loads((out / "run-probe" / "report.json").read_text())
    assert stored["system"] == "probe" and stored["actual"]["test_accuracy"] == report["metrics"]["test"]["accuracy"]
    assert stored["actual"]["train_seconds"] == report["cost"]["wall_seconds"] and "predicted vs actual for probe" in printed


def test_cli_plan_run_refuses_when_nothing_meets_the_target(toy_csv, tmp_path, capsys):
    from verticals.cli import main

    code = main(["plan", f"data={toy_csv}", "backbone=tiny", "target=0.3", "systems=zeroshot", "latency=0.001ms", "timing_seconds=0.2",
                 "--out", str(tmp_path / "p"), "--run", "--quiet"])
    assert code == 2 and "no recipe is predicted to meet" in capsys.readouterr().err
