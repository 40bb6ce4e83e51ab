"""A multi-label run end to end on the tiny backbone: training through the engine, thresholds from
validation, save/load, multi-intent routing and its policy, /v1/feedback with a list, HF and ONNX exports."""

import json

import numpy as np
import pytest

from core.confidence.multilabel import choose_thresholds, sigmoid
from core.data.multilabel import load_multilabel, multi_hot
from core.foundation.errors import UserError
from core.models.multilabel import MultiLabelHead, load_multilabel_head
from core.models.predictor import load_run
from solutions.support.multi_intent import route_multi
from solutions.support.router import IntentRouter, Route, RoutingTable
from tests.support.multilabel_helpers import BOTH, write_multilabel_splits

OVERRIDES = {"backbone": "tiny", "max_steps": "20", "lr": "5e-3", "head_lr": "5e-2", "batch_size": "8",
             "probe_c": "100", "oos_label": ""}


def _cfg(data: str, **extra):
    from core.classify.multilabel_config import load_multilabel_recipe
    from verticals.registry import RECIPES

    return load_multilabel_recipe(RECIPES["support/intent-multilabel"], {**OVERRIDES, "data": data, **extra})


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    from core.classify.multilabel import train_multilabel

    data = write_multilabel_splits(tmp_path_factory.mktemp("ml-data"))
    run = tmp_path_factory.mktemp("ml-run") / "run"
    report = train_multilabel(_cfg(str(data)), run, progress=False)
    return run, data, report


def test_the_run_trains_through_the_engine_and_reports_multilabel_metrics(ml_run):
    run, _, report = ml_run
    assert report["fit"]["steps"] == 20 and (run / "metrics.jsonl").is_file()
    test = report["metrics"]["test"]
    assert {"exact_set_accuracy", "micro_f1", "macro_f1", "top1_accuracy"} <= set(test)
    assert test["exact_set_accuracy"] > 0.8 and test["multi_label_rows"] == 6
    assert set(report["per_label_test"]) == {"card", "transfer"}
    assert report["data"]["multi_label_rows"] == {"train": 18, "validation": 12, "test": 6}
    md = (run / "report.md").read_text()
    assert "rows with several labels" in md and "threshold" in md and "exact_set_accuracy" in md
    assert "top_k=None" in (run / "README.md").read_text()
    saved = {p.suffix for p in (run / "model").rglob("*") if p.is_file()}
    assert ".safetensors" in saved and not saved & {".bin", ".pt", ".pth", ".pkl"}


def test_thresholds_are_chosen_on_validation_and_save_load_keeps_the_scores(ml_run):
    run, data_dir, report = ml_run
    model, head = load_run(run), load_multilabel_head(run / "model")
    data = load_multilabel(str(data_dir))
    logits = model.predict_logits(data.validation.texts)
    expected = choose_thresholds(sigmoid(logits, model.temperature), multi_hot(data.validation.label_sets, model.labels))
    np.testing.assert_allclose(head.thresholds, expected)
    assert report["thresholds"] == dict(zip(head.labels, head.thresholds.tolist()))
    again = load_run(run).predict_logits(data.test.texts)
    np.testing.assert_array_equal(again, model.predict_logits(data.test.texts))
    from core.evaluation.multilabel import multilabel_metrics

    probs = head.probabilities(again, model.temperature)
    assert multilabel_metrics(multi_hot(data.test.label_sets, model.labels), head.decide(probs), probs) == \
        pytest.approx(report["metrics"]["test"])


def test_bad_data_writes_nothing(tmp_path):
    from core.classify.multilabel import train_multilabel

    write_multilabel_splits(tmp_path)
    (tmp_path / "validation.csv").write_text("text,labels\nfine,card\nbroken,\n")
    run = tmp_path / "run"
    with pytest.raises(UserError, match="empty label list"):
        train_multilabel(_cfg(str(tmp_path)), run, progress=False)
    assert not run.exists()
    with pytest.raises(UserError, match="class_weights"):
        train_multilabel(_cfg(str(tmp_path), class_weights="balanced"), run, progress=False)


def test_single_label_data_and_the_probe_mode_train_too(toy_dir, tmp_path):
    from core.classify.multilabel import train_multilabel

    report = train_multilabel(_cfg(str(toy_dir), mode="probe", peft="frozen"), tmp_path / "probe", progress=False)
    assert report["fit"]["steps"] == 0 and report["probe"]["kind"].startswith("one-vs-rest")
    assert report["data"]["multi_label_rows"]["train"] == 0 and report["metrics"]["test"]["n"] == 12


def test_the_router_lists_every_intent_with_its_queue(ml_run, tmp_path):
    run, _, _ = ml_run
    table = tmp_path / "routes.yaml"
    table.write_text("routes:\n  card: {queue: cards, priority: high}\n  transfer: payments\n")
    router = IntentRouter.from_run(run, table)
    both, card = router.route_batch([BOTH[0], "my card was declined"])
    assert both["multi_label"] and {i["intent"] for i in both["intents"]} == {"card", "transfer"}
    confidences = [i["confidence"] for i in both["intents"]]
    assert confidences == sorted(confidences, reverse=True) and both["intent"] == both["intents"][0]["intent"]
    assert both["queue"] == both["intents"][0]["queue"] and len(both["follow_up_queues"]) == 1
    assert set([both["queue"], *both["follow_up_queues"]]) == {"cards", "payments"} and not both["handover"]
    assert [i["intent"] for i in card["intents"]] == ["card"] and card["queue"] == "cards"
    assert card["follow_up_queues"] == [] and card["priority"] == "high"
    assert router.describe()["multi_label"] is True


def test_the_single_label_router_answers_as_before(support_run):
    row = IntentRouter.from_run(support_run).route("my card was declined")
    assert set(row) == {"text", "intent", "confidence", "queue", "priority", "reply", "handover",
                        "fallback_reason", "in_scope_score", "top_k"}


TABLE = RoutingTable({"a": Route("qa"), "b": Route("qb"), "c": Route("qa")}, fallback_queue="human")
HEAD = MultiLabelHead(["a", "b", "c"], np.array([0.5, 0.4, 0.6]))


def _route(probs, score=None, use_oos=True):
    return route_multi("t", np.asarray(probs), HEAD.labels, HEAD, TABLE, in_scope_score=score, ood_threshold=0.0,
                       use_out_of_scope=use_oos, top_k=2)


def test_the_policy_primary_queue_then_follow_ups_without_repeats():
    row = _route([0.55, 0.9, 0.7], score=1.0)
    assert [i["intent"] for i in row["intents"]] == ["b", "c", "a"]
    assert row["intent"] == "b" and row["queue"] == "qb" and row["follow_up_queues"] == ["qa"]
    assert [t["intent"] for t in row["top_k"]] == ["b", "c"]


def test_the_policy_out_of_scope_needs_no_intent_and_a_far_query():
    far = _route([0.45, 0.1, 0.2], score=-1.0)
    assert far["fallback_reason"] == "out_of_scope" and far["queue"] == "human" and far["intents"] == []
    near = _route([0.45, 0.1, 0.2], score=1.0)
    assert near["fallback_reason"] == "low_confidence" and near["queue"] == "human" and near["intent"] == "a"
    unusual_but_clear = _route([0.1, 0.5, 0.2], score=-5.0)
    assert not unusual_but_clear["handover"] and unusual_but_clear["queue"] == "qb"
    assert _route([0.45, 0.1, 0.2], score=-1.0, use_oos=False)["fallback_reason"] == "low_confidence"


def test_feedback_takes_a_list_of_intents_and_refuses_bad_labels(ml_run, tmp_path):
    from fastapi.testclient import TestClient

    from core.mlops.feedback import PredictionLog
    from solutions.support.deployment import ServedModel
    from solutions.support.service import create_app

    run, _, _ = ml_run
    router = IntentRouter.from_run(run)
    with PredictionLog(tmp_path / "p.db", store_text=True) as log:
        app = create_app(ServedModel(router, "v1", None, str(run)), prediction_log=log)
        with TestClient(app) as client:
            rid = client.post("/v1/route", json={"text": BOTH[1]}).json()["request_id"]
            ok = client.post("/v1/feedback", json={"request_id": rid, "intents": ["card", "transfer"]})
            assert ok.status_code == 200, ok.text
            assert ok.json()["labels"] == ["card", "transfer"] and ok.json()["label"] == "card|transfer"
            assert client.post("/v1/feedback", json={"request_id": rid, "intent": "card"}).status_code == 200
            for body in ({"intents": []}, {"intents": ["card", "card"]}, {"intents": ["ca\u202erd"]},
                         {"intents": ["a|b"]}, {"intents": ["x\u2028y"]}, {"intents": ["nul\x00"]},
                         {"intent": "ca\u2066rd"}, {"intent": "card", "intents": ["card"]}, {},
                         {"intents": [f"l{i}" for i in range(10_000)]}):
                bad = client.post("/v1/feedback", json={"request_id": rid, **body})
                assert bad.status_code == 422, (body, bad.text)
            assert log.counts()["feedback"] == 1


def test_hf_pipeline_with_sigmoid_gives_the_run_scores(ml_run, tmp_path):
    from transformers import pipeline

    from core.export.hub import export_hf, write_classifier_run
    from core.classify.multilabel_report import model_card

    run, _, _ = ml_run
    out = export_hf(run, tmp_path / "hf", write_model=write_classifier_run, card=model_card)
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and "multi_label" in config["verticals"]
    model = load_run(run)
    texts = [BOTH[0], "my card was declined", "transfer fee in euros", "hello there"]
    probs = sigmoid(model.predict_logits(texts), model.temperature)
    classify = pipeline("text-classification", model=str(out), trust_remote_code=True, top_k=None,
                        function_to_apply="sigmoid")
    for row, p in zip(classify(texts, truncation=True), probs):
        got = {d["label"]: d["score"] for d in row}
        np.testing.assert_allclose([got[label] for label in model.labels], p, atol=1e-5)


def test_onnx_export_routes_like_torch(ml_run, tmp_path):
    import shutil

    from core.export.onnx import export_run_onnx

    run = tmp_path / "run"
    shutil.copytree(ml_run[0], run)
    export_run_onnx(run)
    texts = [BOTH[2], "my transfer is pending", "what's the weather like"]
    torch_model, onnx_model = load_run(run), load_run(run, "onnx")
    np.testing.assert_allclose(sigmoid(onnx_model.predict_logits(texts), onnx_model.temperature),
                               sigmoid(torch_model.predict_logits(texts), torch_model.temperature), atol=1e-5)
    for a, b in zip(IntentRouter.from_run(run).route_batch(texts), IntentRouter.from_run(run, runtime="onnx").route_batch(texts)):
        assert [i["intent"] for i in a["intents"]] == [i["intent"] for i in b["intents"]]
        assert a["fallback_reason"] == b["fallback_reason"]


def test_verticals_train_prints_the_summary_of_a_multilabel_run(ml_run, capsys):
    from verticals.commands import _print_summary

    run, _, report = ml_run
    _print_summary(report, run)
    out = capsys.readouterr().out
    assert "exact_set_accuracy=" in out and "calibration: temperature" in out
