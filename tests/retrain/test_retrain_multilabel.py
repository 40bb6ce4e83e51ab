"""Retraining a multi-label run (core.mlops.retrain_multilabel) on the tiny backbone: a champion that
knows card and transfer, feedback from a real prediction log with `intents` lists that teaches it a
new intent (refund, alone and beside card), retrained through `verticals retrain --registry`; and
the pure parts (the multi-label plan, label_set_scores) on hand-made inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.classify.multilabel_config import load_multilabel_recipe
from core.confidence.multilabel import choose_thresholds, sigmoid
from core.data.multilabel import load_multilabel, multi_hot
from core.mlops.feedback import FeedbackExample, PredictionLog
from core.mlops.gate import label_set_scores
from core.mlops.retrain_plan import RetrainSettings, plan_feedback
from core.models.multilabel import load_multilabel_head
from core.models.predictor import load_run
from tests.support.multilabel_helpers import write_multilabel_splits

REFUND = ["i want a refund", "refund my money please", "where is my refund", "refund not received yet",
          "please refund the purchase", "how do i get a refund", "refund request for my order",
          "refund still pending", "can i have a refund", "refund the payment", "need a refund now",
          "refund for the broken item"]
CARD_AND_REFUND = [f"card declined {i} and i want a refund" for i in range(8)]
SETTINGS = ["steps=40", "min_examples_new_label=4", "margin=0.05", "seed=0"]


def _ex(rows) -> list[FeedbackExample]:
    return [FeedbackExample(f"r{i}", text, label, float(i), "test") for i, (text, label) in enumerate(rows)]


@pytest.fixture(scope="module")
def ml_champion(tmp_path_factory):
    from core.classify.multilabel import train_multilabel
    from verticals.registry import RECIPES

    data = write_multilabel_splits(tmp_path_factory.mktemp("ml-retrain-data"))
    cfg = load_multilabel_recipe(RECIPES["support/intent-multilabel"], {
        "backbone": "tiny", "max_steps": "20", "lr": "5e-3", "head_lr": "5e-2", "batch_size": "8", "probe_c": "100",
        "oos_label": "", "data": str(data)})
    run = tmp_path_factory.mktemp("ml-retrain") / "champion"
    train_multilabel(cfg, run, progress=False)
    return run, data


def refund_feedback() -> list[tuple[str, str]]:
    return [(t, "refund") for t in REFUND] + [(t, "card|refund") for t in CARD_AND_REFUND] \
        + [("what is the weather on mars", "out_of_scope"), ("sing me a song", "out_of_scope")]


# ---------------------------------------------------------------- pure parts


def test_label_set_scores_count_a_label_the_model_lacks_as_missed():
    # the model knows a, b; truth rows {a}, {a, new}; it predicts a on both
    scores = label_set_scores([("a",), ("a", "new")], np.array([[1, 0], [1, 0]]), ["a", "b"])
    assert scores["exact_set_accuracy"] == 1 / 2
    assert scores["micro_f1"] == pytest.approx(2 * 2 / (3 + 2))  # tp 2, true positives 3, predicted 2
    assert scores["per_label_recall"] == {"a": 1.0, "new": 0.0}
    assert scores["n"] == 2 and scores["multi_label_rows"] == 1


def test_the_multilabel_plan_reads_sets_counts_new_names_per_row_and_drops_rows_with_rare_ones():
    fb = _ex([(f"r {i}", "x|fresh") for i in range(3)] + [(f"s {i}", "fresh") for i in range(2)]
             + [(f"t {i}", "y|rare") for i in range(2)] + [("bad", "x|x"), ("mixed", "x|out_of_scope"),
                                                              ("far", "out_of_scope"), ("one", "x")])
    plan = plan_feedback(fb, ["x", "y"], [], RetrainSettings(min_examples_new_label=5, validation_fraction=0.0),
                         multi_label=True)
    c = plan.counts
    assert plan.new_labels == ["fresh"] and plan.dropped_labels_too_few == {"rare": 2}
    assert (c["invalid"], c["out_of_scope"], c["dropped_too_few"]) == (2, 1, 2)  # x|x and x|out_of_scope invalid
    assert c["by_label"] == {"fresh": 5, "rare": 2, "x": 4, "y": 2}
    assert "several_labels_skipped" not in c
    assert sorted(plan.train.labels + plan.holdout.labels) == sorted(["x|fresh"] * 3 + ["fresh"] * 2 + ["x"])


def test_a_single_label_plan_skips_and_counts_rows_with_several_labels():
    fb = _ex([(f"a {i}", "x") for i in range(4)] + [(f"b {i}", "x|y") for i in range(9)] + [("c", "z|w")])
    plan = plan_feedback(fb, ["x", "y", "z|w"], [], RetrainSettings(min_examples_new_label=2))
    assert plan.counts["several_labels_skipped"] == 9  # "z|w" is a label this run knows: kept
    assert plan.new_labels == [] and "x|y" not in plan.counts["by_label"] and plan.counts["by_label"]["z|w"] == 1


# ---------------------------------------------------------------- on a trained multi-label champion


def test_cli_retrains_a_multilabel_run_from_intents_feedback_and_learns_the_new_intent(ml_champion, tmp_path, capsys):
    from verticals.cli import main

    champion, data_dir = ml_champion
    db = tmp_path / "predictions.db"
    fb = refund_feedback()
    with PredictionLog(db, store_text=True) as log:
        ids = log.log([{"text": t, "label": "card", "confidence": 0.4} for t, _ in fb], "v0001")
        for request_id, (_, label) in zip(ids, fb):
            log.record_feedback(request_id, label)  # what POST /v1/feedback stores for "intents": [...]
    registry, out = tmp_path / "registry", tmp_path / "challenger"
    code = main(["retrain", str(champion), "--feedback", str(db), "--registry", str(registry), "--out", str(out),
                 "--by", "tester", "--data-dir", str(data_dir), *SETTINGS])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    table = printed.out.splitlines()
    assert any(line.startswith("original test micro_f1") for line in table)
    new_row = next(line for line in table if line.strip().startswith("new label refund"))
    assert float(new_row.split()[-1]) > 0  # the challenger's recall of refund on the holdout

    report = json.loads((out / "report.json").read_text())
    section = report["retrain"]
    assert section["new_labels"] == ["refund"] and 0 < section["steps"] <= 40
    assert section["warm_start"].startswith("fit_multilabel") and section["feedback"]["out_of_scope"] == 2
    assert section["gate"]["metric"] == "micro_f1" and isinstance(section["gate"]["promote"], bool)
    assert section["champion"]["feedback_holdout"]["per_label_recall"]["refund"] == 0.0  # it cannot say refund
    assert section["challenger"]["feedback_holdout"]["per_label_recall"]["refund"] > 0
    status = json.loads((registry / "registry.json").read_text())["versions"][1]["status"]
    assert status == ("champion" if section["gate"]["promote"] else "rejected")
    assert main(["registry", "list", str(registry)]) == 0  # multi-label versions list their exact-set accuracy
    listed = capsys.readouterr().out.splitlines()[2:]
    expected = report["metrics"]["test"]["exact_set_accuracy"]
    assert f"{expected:.4f}" in listed[1], listed

    model, head = load_run(out), load_multilabel_head(out / "model")
    assert model.labels == ["card", "transfer", "refund"] and head.labels == model.labels
    assert load_run(champion).labels == ["card", "transfer"]
    probs = head.probabilities(model.predict_logits(REFUND), model.temperature)
    assert head.decide(probs)[:, 2].mean() > 0.5  # the new intent is predicted on its own feedback texts

    # thresholds and temperature refitted on the original validation + the feedback validation slice
    settings = RetrainSettings.from_overrides(dict(s.split("=") for s in SETTINGS))
    original = load_multilabel(str(data_dir))
    plan = plan_feedback(log_examples(db), ["card", "transfer"], original.test.texts, settings, multi_label=True)
    texts = original.validation.texts + plan.validation.texts
    sets = original.validation.label_sets + [tuple(lab.split("|")) for lab in plan.validation.labels]
    assert len(plan.validation) and report["confidence"]["temperature_fitted_on"] == len(texts)
    expected = choose_thresholds(sigmoid(model.predict_logits(texts), model.temperature), multi_hot(sets, model.labels))
    np.testing.assert_allclose(head.thresholds, expected)
    assert json.loads((champion / "model" / "multilabel.json").read_text())["thresholds"].keys() == {"card", "transfer"}


def log_examples(db) -> list[FeedbackExample]:
    with PredictionLog(db, max_age_days=None) as log:
        return log.labelled()
