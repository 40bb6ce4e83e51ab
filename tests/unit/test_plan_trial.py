"""The trial fine-tune (core.plan.trial): its schedule, what hand-made validation curves predict, when
the priors are unsure, settling a prior or a trial, re-settling a plan under other priors; the
priors without a domain; the extrapolation ranges the plan prints; and plans on the tiny backbone
that run trials end to end (the whole run, a prefix read ahead, none, and bf16 pricing)."""

from __future__ import annotations

import json
import math

import pytest

from core.foundation.errors import UserError
from core.plan.choose import Prediction
from core.plan.predict import load_priors
from core.plan.report import extrapolations, format_plan
from core.plan.trial import prior_band, reprice, settle, trial_accuracy, trial_decision, trial_reasons, trial_schedule
from tests.conftest import CARD, TRANSFER, write_csv


def _record(system, measure, value, *, domain, num_labels=20, train_rows=500):
    return {"system": system, "measure": measure, "value": value, "num_labels": num_labels, "train_rows": train_rows,
            "domain": domain, "record": f"benchmarks/results/{domain}.json"}


def _priors(tmp_path, records):
    path = tmp_path / "priors.json"
    path.write_text(json.dumps({"source": "hand-made", "records": records}))
    return path


def test_a_trial_runs_the_whole_run_when_it_is_short_else_the_first_trial_steps():
    assert trial_schedule(48, 200) == (48, 12)  # validated at 12, 24, 36, 48
    assert trial_schedule(27, 200) == (27, 7)  # at 7, 14, 21 and the run's last step, 27
    assert trial_schedule(846, 200) == (200, 50)
    assert trial_schedule(846, 202) == (200, 50)  # a whole number of steps between its 4 validations


def test_a_trial_of_the_whole_run_predicts_its_last_validation_accuracy():
    got = trial_accuracy([(12, 0.90), (24, 0.95), (36, 0.96), (48, 0.965)], total_steps=48, n_validation=1000)
    se = math.sqrt(0.965 * 0.035 / 1000)
    assert got["accuracy"] == 0.965 and got["accuracy_low"] == pytest.approx(0.965 - se)
    assert got["accuracy_high"] == pytest.approx(0.965 + se) and got["read_at"] == 48 and "measured" in got["note"]


def test_a_prefix_curve_is_read_at_the_run_s_end_within_four_times_its_steps():
    points = [(s, 0.97 - 0.5 * s ** -0.5) for s in (50, 100, 150, 200)]
    got = trial_accuracy(points, total_steps=800, n_validation=1000)
    point = 0.97 - 0.5 / math.sqrt(800)
    se = math.sqrt(point * (1 - point) / 1000)
    assert got["read_at"] == 800 and got["accuracy"] == pytest.approx(point, abs=1e-4)
    assert got["accuracy_low"] == pytest.approx(points[-1][1] - se, abs=1e-4)  # from the last measured point
    assert got["accuracy_high"] == pytest.approx(point + se, abs=1e-4) and "(the run's end)" in got["note"]


def test_a_prefix_curve_is_never_read_beyond_four_times_its_steps():
    points = [(s, 0.97 - 0.5 * s ** -0.5) for s in (50, 100, 150, 200)]
    got = trial_accuracy(points, total_steps=2000, n_validation=1000)
    assert got["read_at"] == 800 and got["accuracy"] == pytest.approx(0.97 - 0.5 / math.sqrt(800), abs=1e-4)
    assert "4x the steps measured, short of the run's 2000" in got["note"]


def test_the_reasons_to_try_a_fine_tune(tmp_path):
    two = [_record("lora", "gap_closure", 0.20, domain="a", num_labels=10, train_rows=400),
           _record("lora", "gap_closure", 0.25, domain="b", num_labels=30, train_rows=900)]
    priors = load_priors(_priors(tmp_path, two))
    inside = {"num_labels": 20, "train_rows": 500}
    # probe 0.90: the prior spans 0.92-0.925, +-se 0.01 -> 91.0-93.5%
    assert trial_reasons("lora", 0.90, 0.01, priors, inside, target=0.95) == []
    assert trial_reasons("full", 0.90, 0.01, priors, inside, target=0.95) == ["no prior record for full"]
    assert trial_reasons("lora", 0.90, 0.01, priors, inside, target=0.93) == [
        "the target 93.0% lies within its predicted 91.0-93.5%: the pick depends on which side it falls"]
    assert trial_reasons("lora", 0.90, 0.01, priors, {"num_labels": 77, "train_rows": 100}, target=0.95) == [
        "77 labels, outside the 10-30 labels of its records", "100 training rows, outside the 400-900 training rows of its records"]
    assert trial_reasons("lora", 0.50, 0.01, priors, inside, target=0.95) == [  # 0.05 x 0.5: 2.5 points
        "its prior's range is 2.5 points wide (> 2)"]
    one = load_priors(_priors(tmp_path, two[:1]))
    assert trial_reasons("lora", 0.90, 0.01, one, inside, target=0.95) == [
        "1 prior record (a spread needs 2)", "20 labels, outside the 10-10 labels of its records",
        "500 training rows, outside the 400-400 training rows of its records"]


def test_a_trial_replaces_the_prior_only_where_it_ran_and_is_used():
    band, trial = (0.954, 0.945, 0.964), {"accuracy": 0.965, "accuracy_low": 0.958, "accuracy_high": 0.972}
    assert settle(band, trial, use_trial=True) == {"how": "trial", "accuracy": 0.965, "accuracy_low": 0.958,
                                                   "accuracy_high": 0.972}
    assert settle(band, trial, use_trial=False)["how"] == "prior" and settle(band, None, True)["accuracy"] == 0.954
    assert settle(None, None, use_trial=True) is None  # neither: the system is left out


def _timed(system="lora", seconds=400.0):
    return Prediction(system, "prior", 0.0, 0.0, 0.0, seconds, 0.0, 0.01, 0.0, 8.0, 1.0, seconds + 10)


def test_a_fine_tune_the_budget_rules_out_is_not_tried(tmp_path):
    priors = load_priors(_priors(tmp_path, [_record("lora", "gap_closure", 0.2, domain="a")]))
    regime, free = {"num_labels": 20, "train_rows": 500}, {"budget_s": None, "latency_s": None}
    band, reasons, use = trial_decision(_timed(), 0.9, 0.01, priors, regime, 0.95, free, "auto")
    assert band == pytest.approx((0.92, 0.91, 0.93)) and reasons and use
    tight = {"budget_s": 100.0, "latency_s": None}
    assert trial_decision(_timed(), 0.9, 0.01, priors, regime, 0.95, tight, "auto")[1:] == ([], False)
    assert trial_decision(_timed(), 0.9, 0.01, priors, regime, 0.95, tight, "always")[2] is True
    assert trial_decision(_timed(), 0.9, 0.01, priors, regime, 0.95, free, "never")[2] is False


def test_the_issue_case_the_trial_lifts_lora_over_the_target(tmp_path):
    """Priors from another domain say LoRA 95.4% for a 96% target; the trial measured 96.5%."""
    from core.plan.choose import cheapest

    priors = load_priors(_priors(tmp_path, [_record("lora", "gap_closure", 0.08, domain="support", num_labels=77,
                                                   train_rows=9000),
                                           _record("lora", "gap_closure", 0.27, domain="finance", num_labels=3,
                                                   train_rows=3870)]))
    probe = {"system": "probe", "how": "measured", "accuracy": 0.95, "accuracy_low": 0.944, "accuracy_high": 0.956,
             "train_seconds": 5.0, "train_core_hours": 0.0, "train_usd": 0.001, "peak_rss_mb": 0.0, "p50_ms": 8.0,
             "usd_per_million": 1.0, "run_seconds": 9.0}
    trial = trial_accuracy([(12, 0.95), (24, 0.96), (36, 0.963), (48, 0.965)], 48, 1400)
    result = {"config": {"target": 0.96}, "data": {"validation": 1400, "num_labels": 20, "train": 500},
              "measurements": {"probe_accuracy": 0.95}, "calibration": {"lora": {}},
              "constraints": {"budget_s": None, "latency_s": None}, "trials": {"lora": trial},
              "predictions": [probe, {**probe, "system": "lora", "how": "trial", "train_usd": 0.01}]}
    with_trial, prior_only = reprice(result, priors, "auto"), reprice(result, priors, "never")
    assert [p.how for p in with_trial] == ["measured", "trial"] and with_trial[1].accuracy == 0.965
    assert prior_only[1].how == "prior" and prior_only[1].accuracy == pytest.approx(0.95 + 0.175 * 0.05)
    assert cheapest(with_trial, 0.96).system == "lora" and cheapest(prior_only, 0.96) is None
    without_finance = load_priors(_priors(tmp_path, priors["records"]), without_domain="finance")
    assert reprice(result, without_finance, "never")[1].accuracy == pytest.approx(0.95 + 0.08 * 0.05)
    assert prior_band("lora", 0.95, 0.0, without_finance) == pytest.approx((0.954, 0.954, 0.954))


def test_priors_without_a_domain_leave_its_records_out(tmp_path):
    records = [_record("full", "gap_closure", 0.2, domain="support"), _record("full", "gap_closure", 0.4, domain="finance"),
               _record("ia3", "offset_vs_full", -0.03, domain="finance")]
    path = _priors(tmp_path, records)
    assert load_priors(path)["gap_closure"]["full"]["n"] == 2
    kept = load_priors(path, without_domain="finance")
    assert kept["gap_closure"]["full"] == {"mean": 0.2, "min": 0.2, "max": 0.2, "n": 1}
    assert kept["offset_vs_full"] == {} and kept["records"] == records[:1] and kept["without_domain"] == "finance"
    path.write_text(json.dumps({"records": [{k: v for k, v in r.items() if k != "domain"} for r in records]}))
    with pytest.raises(UserError, match="regenerate"):  # records written before they carried a domain
        load_priors(path, without_domain="finance")
    assert {r["domain"] for r in load_priors()["records"]} == {"support", "finance"}  # the packaged file


def test_the_extrapolations_state_the_range_each_is_read_in():
    result = {"learning_curve": {"points": [[62, 0.8], [125, 0.85], [250, 0.88], [500, 0.9]]}, "data": {"train": 500},
              "time_parts": {"probe": {}, "lora": {"step_tokens": {"calibrated": [640, 1280], "run": [320, 1600],
                                                                    "share_outside": 0.125}},
                             "static": {"distillation_scaled": {"sample_tokens": 1024, "vocabulary": 30522}}},
              "trials": {"lora": {"note": "its validation curve over steps 50-200 read at step 800 (the run's end)"}}}
    lines = extrapolations(result)
    assert lines[0].startswith("learning curve: fitted on 62-500 labels; read at most at 2,000 (4x)")
    assert ("lora step time: a line through calibration steps of 640-1,280 padded tokens; the run's steps span "
            "320-1,600 (12% outside, read off the line extended)") in lines
    assert "static distillation time: timed on 1,024 vocabulary tokens, scaled to all 30,522" in lines
    assert "lora trial: its validation curve over steps 50-200 read at step 800 (the run's end)" in lines


# ---------------------------------------------------------------- plans on the tiny backbone


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]
    return write_csv(tmp_path_factory.mktemp("plan-trial") / "tickets.csv", rows * 5)


def _plan(toy_csv, **settings):
    from core.plan.planner import make_plan, plan_config

    base = {"data": str(toy_csv), "backbone": "tiny", "systems": "probe,lora", "calibration_steps": "6",
            "timing_seconds": "0.2", "target": "0.5"}
    return make_plan(plan_config(base | {k: str(v) for k, v in settings.items()}), progress=False)


def test_a_plan_reads_a_trial_of_the_run_s_first_steps_ahead_to_its_end(toy_csv):
    result = _plan(toy_csv, trial="always", trial_steps=4, epochs=5)  # 48 rows, batch 32: 2 steps an epoch, 10 in all
    trial = result["trials"]["lora"]
    assert trial["steps_run"] == 4 and trial["total_steps"] == 10 and [s for s, _ in trial["points"]] == [1, 2, 3, 4]
    assert trial["read_at"] == 10 and trial["seconds"] > 0 and trial["precision"] == "fp32"
    lora = next(p for p in result["predictions"] if p["system"] == "lora")
    assert lora["how"] == "trial" and lora["accuracy"] == trial["accuracy"]
    text = format_plan(result)
    assert "lora: trial fine-tune of 4 of the run's 10 steps" in text and "tried because 2 labels, outside" in text
    assert "lora trial: its validation curve over steps 1-4 read at step 10 (the run's end)" in text
    assert "of which trial fine-tunes" in text and "fine-tunes priced at fp32" in text


def test_with_trial_never_the_plan_keeps_the_prior_and_says_it_is_unsure(toy_csv):
    result = _plan(toy_csv, trial="never")
    lora = next(p for p in result["predictions"] if p["system"] == "lora")
    assert lora["how"] == "prior" and result["trials"] == {} and result["trial_reasons"]["lora"]
    assert "lora: the prior is unsure (" in format_plan(result) and "not tried (trial=never)" in format_plan(result)


def test_on_a_device_with_native_bf16_the_plan_prices_fine_tunes_in_bf16(toy_csv, monkeypatch):
    from core.foundation import precision

    monkeypatch.setattr(precision, "cpu_bf16", lambda: precision.CpuBf16(native=True, flags=("amx_bf16",),
                                                                          capability="AVX512", mkldnn_bf16=True))
    result = _plan(toy_csv, trial="always")
    assert result["precision"]["resolved"] == "bf16" and result["precision"]["priced"] == {"lora": "bf16"}
    assert result["calibration"]["lora"]["precision"] == "bf16" and result["trials"]["lora"]["precision"] == "bf16"
    assert "fine-tunes priced at bf16: mixed_precision=auto resolves to bf16 on cpu (this CPU has native bf16)" in (
        format_plan(result))
