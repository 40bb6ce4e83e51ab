"""Safe retraining (core.mlops.retrain) end to end on the tiny backbone and the demo support set: a probe
champion trained without one intent, feedback that teaches it (through a real prediction log and
`verticals retrain --registry`), feedback that contradicts it (refused by the gate), a LoRA warm
start, and the pure parts (plan_feedback, gate, imprinted_rows) on hand-made inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import verticals
from core.foundation.errors import UserError
from core.mlops.feedback import FeedbackExample, PredictionLog
from core.mlops.gate import gate
from core.mlops.retrain_plan import RetrainSettings, plan_feedback
from core.mlops.warm_start import imprinted_rows
from core.models.predictor import load_run
from tests.conftest import REPO, write_csv

DEMO = REPO / "datasets" / "demo_support"
NEW = "close_account"  # the intent the champion never saw


def demo_rows(split: str) -> list[tuple[str, str]]:
    with open(DEMO / f"{split}.csv", encoding="utf-8") as handle:
        return [(r["text"], r["label"]) for r in csv.DictReader(handle)]


def examples(rows, start: int = 0) -> list[FeedbackExample]:
    return [FeedbackExample(f"r{start + i}", text, label, float(start + i), "test") for i, (text, label) in enumerate(rows)]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A probe on the demo support set without close_account (seconds on the tiny backbone)."""
    root = tmp_path_factory.mktemp("retrain")
    data = root / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        write_csv(data / f"{split}.csv", [r for r in demo_rows(split) if r[1] != NEW])
    run = verticals.train("support/intent-probe", data=str(data), backbone="tiny", label_names=False,
                          probe_c_search=False, out=root / "champion")
    return run.path


def new_intent_feedback() -> list[FeedbackExample]:
    rows = [r for split in ("train", "validation", "test") for r in demo_rows(split) if r[1] == NEW]
    oos = [(text, "out_of_scope") for text, _ in demo_rows("oos")[:10]]
    return examples(rows + oos)


# ---------------------------------------------------------------- pure parts


def test_plan_dedupes_drops_test_texts_sets_out_of_scope_aside_and_holds_out_per_label():
    fb = examples([("a1", "x"), ("a1", "y"), ("in test", "x"), ("far away", "out_of_scope"), ("", "x")]
                  + [(f"new {i}", "fresh") for i in range(10)] + [(f"rare {i}", "rare") for i in range(3)]
                  + [(f"x {i}", "x") for i in range(5)])
    plan = plan_feedback(fb, ["x", "y"], ["in test"], RetrainSettings(min_examples_new_label=8, holdout_fraction=0.3,
                                                                     validation_fraction=0.0))
    c = plan.counts
    assert (c["total"], c["invalid"], c["duplicates"], c["in_original_test"], c["out_of_scope"]) == (23, 1, 1, 1, 1)
    assert plan.new_labels == ["fresh"] and plan.dropped_labels_too_few == {"rare": 3}
    assert plan.out_of_scope.texts == ["far away"]
    # a1 -> y (the later label wins); fresh: 10 rows, round(10 * 0.3) = 3 held out; x: 5 rows -> 2; y: 1 row -> 0
    assert plan.holdout.labels.count("fresh") == 3 and plan.holdout.labels.count("x") == 2
    assert "y" not in plan.holdout.labels and ("a1", "y") in zip(plan.train.texts, plan.train.labels)
    assert not set(plan.train.texts) & set(plan.holdout.texts)
    assert len(plan.train) + len(plan.holdout) == 10 + 5 + 1


def test_gate_promotes_only_on_a_feedback_win_within_the_margin():
    def scores(test, held, n=10):
        return {"test": {"accuracy": test}, "feedback_holdout": {"n": n, "accuracy": held}}

    assert gate(scores(0.80, 0.5), scores(0.79, 0.6), 0.01)["promote"] is True  # drop 0.01 == margin
    refused = gate(scores(0.80, 0.5), scores(0.78, 0.9), 0.01)
    assert refused["promote"] is False and "beyond the margin" in refused["reasons"][1]
    assert refused["test_drop"] == pytest.approx(0.80 - 0.78) and refused["feedback_gain"] == pytest.approx(0.9 - 0.5)
    assert gate(scores(0.8, 0.5), scores(0.9, 0.5), 0.01)["promote"] is False  # a tie on feedback is no win
    assert gate(scores(0.8, 0.5), scores(0.8, 0.6), -0.05)["promote"] is False  # a negative margin demands a gain
    empty = gate(scores(0.8, 0.0, n=0), scores(0.9, 0.0, n=0), 0.01)
    assert empty["promote"] is False and "no held-out feedback" in empty["reasons"][0]


def test_imprinted_rows_point_from_the_mean_to_the_class_mean():
    background = np.array([[1.0, 0.0], [1.0, 2.0], [1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    w, b = imprinted_rows([np.array([[1.0, 3.0]])], background, scale=2.0, bias=0.5)
    assert w.tolist() == [[0.0, 2.0]]  # 2 * unit((1, 3) - (1, 1))
    assert b.tolist() == [0.5 - 2.0]  # bias - w . mean
    assert (w @ np.array([1.0, 1.0]) + b)[0] == pytest.approx(0.5)  # the mean text gets `bias`


def test_settings_are_validated_with_the_field_named():
    with pytest.raises(UserError, match="holdout_fraction"):
        RetrainSettings(holdout_fraction=1.5)
    with pytest.raises(UserError, match="unknown retrain setting 'epochs'"):
        RetrainSettings.from_overrides({"epochs": "2"})
    assert RetrainSettings.from_overrides({"steps": "5", "margin": "0.02"}) == RetrainSettings(steps=5, margin=0.02)


# ---------------------------------------------------------------- on a trained champion


def test_cli_retrain_learns_a_new_intent_from_a_prediction_log_and_promotes_it(champion, tmp_path, capsys):
    from verticals.cli import main

    db = tmp_path / "predictions.db"
    fb = new_intent_feedback()
    with PredictionLog(db, store_text=True) as log:
        ids = log.log([{"text": e.text, "label": "cancel_order", "confidence": 0.4} for e in fb], "v0001")
        for request_id, e in zip(ids, fb):
            log.record_feedback(request_id, e.label)
    registry, out = tmp_path / "registry", tmp_path / "challenger"
    code = main(["retrain", str(champion), "--feedback", str(db), "--registry", str(registry), "--out", str(out),
                 "--by", "tester", "margin=0.05"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "original test accuracy" in printed.out and f"new label {NEW}" in printed.out
    assert "registered v0002 as champion" in printed.out and "retrain: " in printed.err  # progress lines

    section = json.loads((out / "report.json").read_text())["retrain"]
    assert section["new_labels"] == [NEW] and section["feedback"]["out_of_scope"] == 10
    assert section["champion"]["feedback_holdout"]["accuracy"] == 0.0  # it cannot say close_account
    assert section["challenger"]["feedback_holdout"]["per_label_accuracy"][NEW] > 0
    assert section["gate"]["promote"] is True and section["parent"] == "v0001"
    assert section["replay_rows"] == len(demo_rows("train")) - 22  # a head refit replays every original row
    assert {"n", "out_of_scope_recall"} <= set(section["challenger"]["feedback_out_of_scope"])
    assert section["cost"]["cpu_seconds"] > 0

    model = load_run(out)
    assert NEW in model.labels and model.ood is not None
    assert load_run(champion).labels == [lab for lab in model.labels if lab != NEW]

    reg = verticals.open_registry(registry)
    assert reg.champion() == "v0002" and [v["parent"] for v in reg.versions()] == [None, "v0001"]
    assert reg.versions()[1]["promoted_by"] == "tester"
    assert main(["registry", "rollback", str(registry), "--by", "ops"]) == 0
    assert reg.champion() == "v0001"
    assert main(["registry", "promote", str(registry), "v0002", "--by", "ops", "--reason", "checked"]) == 0
    capsys.readouterr()
    assert main(["registry", "list", str(registry)]) == 0
    listing = capsys.readouterr().out
    assert "champion v0002" in listing and "retired" in listing and "ops" in listing


def test_the_gate_refuses_a_challenger_taught_contradicting_labels(champion, tmp_path):
    rows = [r for split in ("train", "validation") for r in demo_rows(split)]
    rotate = {"track_order": "cancel_order", "cancel_order": "refund_status", "refund_status": "track_order"}
    wrong = [(text, rotate[label]) for text, label in rows if label in rotate]
    report = verticals.retrain(champion, examples(wrong), out=tmp_path / "bad", margin=0.02)
    section = report["retrain"]
    drop = section["champion"]["test"]["accuracy"] - section["challenger"]["test"]["accuracy"]
    assert drop > 0.02 and section["gate"]["promote"] is False
    assert "beyond the margin" in section["gate"]["reasons"][1] and section["new_labels"] == []


def test_a_single_label_run_skips_feedback_with_several_intents_and_says_so(champion, tmp_path, capsys):
    several = examples([(f"cancel order {i} and where is my refund", "cancel_order|refund_status") for i in range(10)],
                       start=1000)
    report = verticals.retrain(champion, new_intent_feedback() + several, out=tmp_path / "next", progress=True)
    section = report["retrain"]
    assert section["feedback"]["several_labels_skipped"] == 10
    err = capsys.readouterr().err
    assert "10 with several labels skipped" in err and "multilabel-classification" in err
    assert section["new_labels"] == [NEW] and "cancel_order|refund_status" not in section["feedback"]["by_label"]
    assert not any("|" in label for label in load_run(tmp_path / "next").labels)
    with pytest.raises(UserError, match=r"10 rows carry several labels.*multilabel-classification"):
        verticals.retrain(champion, several, out=tmp_path / "none")


def test_lora_warm_start_continues_the_adapter_and_grows_the_head(tmp_path):
    import torch
    from safetensors.torch import load_file

    champion = verticals.train("support/intent-demo", max_steps=2, backbone="tiny", out=tmp_path / "lora")
    fb = examples([(t, "delete_profile") for t, label in demo_rows("train") if label == NEW])  # a name it lacks
    report = verticals.retrain(champion.path, fb, out=tmp_path / "next", steps=2, min_examples_new_label=4)
    assert report["retrain"]["steps"] == 2 and report["retrain"]["warm_start"].endswith("peft=lora)")
    model = load_run(tmp_path / "next")
    assert model.labels == champion.labels + ["delete_profile"]
    before = load_file(champion.path / "model" / "adapter" / "adapter_model.safetensors")
    after = load_file(tmp_path / "next" / "model" / "adapter" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the adapter trained on
    head = load_file(tmp_path / "next" / "model" / "head.safetensors")
    assert head["weight"].shape[0] == len(champion.labels) + 1


def test_bad_feedback_sources_are_user_errors(champion, tmp_path, capsys):
    from verticals.cli import main

    with pytest.raises(UserError, match="feedback database not found"):
        verticals.retrain(champion, tmp_path / "missing.db", out=tmp_path / "x")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all, just bytes" * 10)
    with pytest.raises(UserError, match="not an SQLite database"):
        verticals.retrain(champion, tmp_path / "junk.db", out=tmp_path / "x")
    import sqlite3

    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE things(x)").connection.commit()
    with pytest.raises(UserError, match=r"its tables: things.*support prediction log"):
        verticals.retrain(champion, tmp_path / "other.db", out=tmp_path / "x")
    PredictionLog(tmp_path / "empty.db").close()
    assert main(["retrain", str(champion), "--feedback", str(tmp_path / "empty.db")]) == 2
    assert "holds no labelled feedback" in capsys.readouterr().err
    with pytest.raises(UserError, match="no labelled feedback"):
        verticals.retrain(champion, [], out=tmp_path / "x")
    only_oos = examples([(f"weather on mars {i}", "out_of_scope") for i in range(5)])
    with pytest.raises(UserError, match="no feedback left to train on"):
        verticals.retrain(champion, only_oos, out=tmp_path / "y")
    capsys.readouterr()
    assert main(["registry", "list", str(tmp_path / "nowhere")]) == 2
    assert "not a model registry" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()


def test_texts_the_champions_lineage_learnt_from_are_never_held_out():
    """A later retrain splits grown feedback afresh; rows an earlier challenger (today's champion)
    trained on must stay out of the holdout, or the gate judges the champion on its training rows."""
    from core.mlops.feedback import FeedbackExample, text_sha256
    from core.mlops.retrain_plan import RetrainSettings, plan_feedback

    feedback = [FeedbackExample(id=str(i), text=f"row {i}", label="x" if i % 2 else "y", ts=float(i), source="t")
                for i in range(40)]
    learnt = frozenset(text_sha256(f"row {i}") for i in range(20))
    plan = plan_feedback(feedback, ["x", "y"], [], RetrainSettings(), trained=learnt)
    held = set(plan.holdout.texts)
    assert held and not held & {f"row {i}" for i in range(20)}
    assert {f"row {i}" for i in range(20)} <= set(plan.train.texts)
    assert plan.counts["already_learnt"] == 20
