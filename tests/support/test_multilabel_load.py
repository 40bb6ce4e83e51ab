"""A saved multi-label run through `verticals.load` / `Run.predict` / `evaluate`, `verticals predict`
and `verticals eval` (thresholds, sigmoid, the router's out-of-scope rule), and its drift baseline
(what the support service's monitor compares traffic with)."""

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import verticals
from core.classify.multilabel_scoring import predict_multilabel
from core.confidence.multilabel import sigmoid
from core.data.multilabel import load_multilabel, multi_hot
from core.evaluation.accuracy_estimate import SET_SCORE
from core.evaluation.drift import DriftWindow
from core.evaluation.drift_baseline import MULTILABEL_ACCURACY_NOTE, load_drift_baseline
from core.evaluation.multilabel import multilabel_metrics
from core.models.multilabel import MultiLabelHead
from core.models.predictor import load_run
from solutions.support.deployment import ServedModel, load_baseline, model_version
from solutions.support.monitoring import MonitorSettings
from solutions.support.router import IntentRouter
from solutions.support.service import create_app
from tests.support.multilabel_helpers import BOTH, write_multilabel_splits
from verticals.cli import main

OVERRIDES = {"backbone": "tiny", "max_steps": "20", "lr": "5e-3", "head_lr": "5e-2", "batch_size": "8",
             "probe_c": "100", "oos_label": ""}
TEXTS = [BOTH[0], "my card was declined", "transfer fee in euros", "zebra violin glacier"]


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    from core.classify.multilabel import train_multilabel
    from core.classify.multilabel_config import load_multilabel_recipe
    from verticals.registry import RECIPES

    data = write_multilabel_splits(tmp_path_factory.mktemp("ml-data"))
    run = tmp_path_factory.mktemp("ml-run") / "run"
    cfg = load_multilabel_recipe(RECIPES["support/intent-multilabel"], {**OVERRIDES, "data": str(data)})
    report = train_multilabel(cfg, run, progress=False)
    return run, data, report


def test_run_predict_gives_the_label_set_at_the_thresholds_with_sigmoid_probabilities(ml_run):
    run_dir, _, _ = ml_run
    run = verticals.load(run_dir)
    assert run.multi_label is not None and "exact set accuracy" in repr(run)
    rows = run.predict(TEXTS)
    model, head = run.model, run.multi_label
    probs = sigmoid(model.predict_logits(TEXTS), model.temperature)
    np.testing.assert_allclose(run.predict_proba(TEXTS), probs, atol=1e-6)
    assert not np.allclose(probs.sum(axis=1), 1.0)  # one sigmoid per label, not a softmax
    routes = IntentRouter.from_run(run_dir).route_batch(TEXTS)
    for row, p, route in zip(rows, probs, routes):
        predicted = [r["label"] for r in row["labels"]]
        assert set(predicted) == {model.labels[j] for j in np.flatnonzero(p >= head.thresholds)}
        assert predicted == [i["intent"] for i in route["intents"]]  # as the router routes it
        assert row["label"] == (predicted[0] if predicted else None) and row["multi_label"]
        assert row["confidence"] == route["confidence"]
        assert row["out_of_scope"] == (route["fallback_reason"] == "out_of_scope")
        assert all(r["probability"] >= r["threshold"] for r in row["labels"])
    assert {r["label"] for r in rows[0]["labels"]} == {"card", "transfer"}
    assert run.route(TEXTS[0])["multi_label"]  # Run.router passes the head on


def test_no_label_above_its_threshold_is_out_of_scope_only_when_the_scorer_says_far(ml_run):
    model = load_run(ml_run[0])
    assert model.ood is not None
    head = MultiLabelHead(list(model.labels), np.array([1.5, 1.5]))  # nothing clears (p <= 1)
    rows = predict_multilabel(model, head, TEXTS, top_k=1)
    logits, embeddings = model.predict_all(TEXTS)
    far = model.ood.scores(logits, embeddings, model.temperature) < model.ood.threshold
    assert [r["labels"] for r in rows] == [[]] * len(TEXTS) and all(r["label"] is None for r in rows)
    assert [r["out_of_scope"] for r in rows] == far.tolist()
    model.ood = None  # no scorer: every text without a label is out of scope (the router's rule)
    assert all(r["out_of_scope"] for r in predict_multilabel(model, head, TEXTS))


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_reports_set_metrics_on_the_own_split_and_on_a_labels_file(ml_run, tmp_path, capsys):
    run_dir, _, report = ml_run
    code, out, _ = _cli(capsys, "eval", run_dir, "--json")
    own = json.loads(out)
    assert code == 0 and own["multi_label"] and own["split"] == "test"
    for key in ("exact_set_accuracy", "micro_f1", "macro_f1", "top1_accuracy", "n"):
        assert own[key] == pytest.approx(report["metrics"]["test"][key]), key
    assert own["per_label"] == report["per_label_test"]
    other = tmp_path / "other.jsonl"
    rows = [("my card was declined", ["card"]), (BOTH[1], ["card", "transfer"]), ("my transfer is pending", ["transfer"])]
    other.write_text("".join(json.dumps({"text": t, "labels": labels}) + "\n" for t, labels in rows))
    code, out, _ = _cli(capsys, "eval", run_dir, "--data", other, "--json")
    result = json.loads(out)
    model, run = load_run(run_dir), verticals.load(run_dir)
    probs = run.predict_proba([t for t, _ in rows])
    expected = multilabel_metrics(multi_hot([tuple(s) for _, s in rows], model.labels),
                                  probs >= run.multi_label.thresholds, probs)
    assert code == 0 and result["evaluated"].startswith("every row of other.jsonl") and result["n"] == 3
    assert {k: result[k] for k in expected} == pytest.approx(expected)
    assert run.evaluate(other)["exact_set_accuracy"] == result["exact_set_accuracy"]
    code, out, _ = _cli(capsys, "eval", run_dir, "--data", other)
    assert code == 0 and "exact_set_accuracy=" in out and "card" in out and "precision=" in out
    other.write_text(json.dumps({"text": "where is my parcel", "labels": ["delivery"]}) + "\n")
    code, _, err = _cli(capsys, "eval", run_dir, "--data", other)
    assert code == 2 and "'delivery' is not one the model knows" in err


def test_predict_command_prints_label_sets(ml_run, capsys):
    code, out, _ = _cli(capsys, "predict", ml_run[0], BOTH[0], "my card was declined")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["text"] for r in rows] == [BOTH[0], "my card was declined"]
    assert {r["label"] for r in rows[0]["labels"]} == {"card", "transfer"} and rows[0]["multi_label"]


def test_the_drift_baseline_reads_validation_as_the_router_does(ml_run):
    run_dir, data_dir, report = ml_run
    baseline = load_drift_baseline(run_dir)
    assert baseline is not None and baseline.multi_label and report["drift_baseline"]["multi_label"]
    validation = load_multilabel(str(data_dir)).validation
    routes = IntentRouter.from_run(run_dir).route_batch(validation.texts)
    assert baseline.n_validation == len(validation) == len(baseline.confidence)
    np.testing.assert_allclose(baseline.confidence, [r["confidence"] for r in routes], atol=1e-4)
    counts = {label: sum(label in [i["intent"] for i in r["intents"]] for r in routes) for label in baseline.label_share}
    assert baseline.label_share == pytest.approx({k: v / sum(counts.values()) for k, v in counts.items()})
    handed_over = float(np.mean([r["handover"] for r in routes]))
    assert baseline.fallback_rate_under(0.99, 0.99) == baseline.fallback_rate_under(0.0, 0.0) == handed_over
    assert baseline.out_of_scope_rate == pytest.approx(np.mean([r["fallback_reason"] == "out_of_scope" for r in routes]))
    # the accuracy fit: ATC over the predicted-set probability, against validation exact-set accuracy
    head = IntentRouter.from_run(run_dir).multi_label
    y = multi_hot(validation.label_sets, head.labels)
    exact = np.mean([{i["intent"] for i in r["intents"]} == {head.labels[j] for j in np.flatnonzero(t)}
                     for r, t in zip(routes, y)])
    fit = baseline.accuracy
    assert fit is not None and fit.score == SET_SCORE and fit.validation_accuracy == pytest.approx(exact)
    assert fit.validation_mean_confidence == pytest.approx(np.mean([r["set_confidence"] for r in routes]), abs=1e-6)
    assert np.mean([r["set_confidence"] >= fit.threshold for r in routes]) == pytest.approx(exact, abs=1 / len(routes))


def test_set_confidence_is_the_probability_of_the_whole_predicted_set():
    head = MultiLabelHead(["a", "b", "c"], np.array([0.5, 0.3, 0.9]))
    probs = np.array([[0.8, 0.4, 0.2], [0.1, 0.2, 0.95], [0.0, 1.0, 0.5]])
    expected = [0.8 * 0.4 * 0.8, 0.9 * 0.8 * 0.95, 1.0 * 1.0 * 0.5]  # p where decided, 1 - p where not
    np.testing.assert_allclose(head.set_confidence(probs), expected, atol=1e-9)


def test_a_multi_label_fit_reads_set_confidence_and_says_why_when_rows_lack_it():
    from core.evaluation.accuracy_estimate import AccuracyFit
    from core.evaluation.drift import drift_report
    from core.evaluation.drift_baseline import DriftBaseline

    fit = AccuracyFit.fit(np.linspace(0, 1, 11), 0.6, score=SET_SCORE)  # 4 of 11 rows fall below the threshold
    baseline = DriftBaseline(embeddings=np.zeros((3, 2), np.float32), confidence=np.array([0.9, 0.8, 0.7], np.float32),
                             label_share={"a": 1.0}, fallback_rate=None, model_version="v", accuracy=fit,
                             multi_label=True)
    report = drift_report(baseline, embeddings=None, confidence=[0.99] * 4, labels={}, fallback_rate=None,
                          set_confidence=[0.1, 0.2, 0.9, None])
    assert report["accuracy_estimate"]["estimate"] == pytest.approx(1 / 3)  # the row without one is left out
    assert report["accuracy_estimate"]["method"] == f"ATC ({SET_SCORE})"
    missing = drift_report(baseline, embeddings=None, confidence=[0.99] * 4, labels={}, fallback_rate=None)
    assert missing["accuracy_estimate"]["estimate"] is None
    assert "no set_confidence" in missing["accuracy_estimate"]["status"]
    window = DriftWindow("v", size=4, min_rows=2)
    window.add(None, [{"intent": "a", "confidence": 0.9, "set_confidence": 0.95},
                      {"intent": "a", "confidence": 0.9, "set_confidence": 0.05}], label_key="intent")
    assert window.report(baseline)["accuracy_estimate"]["estimate"] == pytest.approx(0.5)


def test_the_drift_window_counts_every_intent_of_a_multi_label_route():
    window = DriftWindow("v", size=4, min_rows=1)
    window.add(None, [{"intent": "a", "confidence": 0.9, "intents": [{"intent": "a"}, {"intent": "b"}]},
                      {"intent": "a", "confidence": 0.4, "intents": [], "fallback_reason": "low_confidence"},
                      {"intent": "c", "confidence": 0.8}], label_key="intent", label_set_key="intents")
    assert window._labels[:3] == [("a", "b"), (), ("c",)]


def test_get_drift_works_for_a_multi_label_run(ml_run):
    run_dir, data_dir, _ = ml_run
    validation = load_multilabel(str(data_dir)).validation.texts
    settings = MonitorSettings(interval_s=0.05, every_rows=8, min_interval_s=0, window_rows=len(validation),
                               min_rows=len(validation))
    router = IntentRouter.from_run(run_dir)
    served = ServedModel(router, model_version(run_dir), load_baseline(run_dir, router.settings), str(run_dir))
    with TestClient(create_app(served, monitoring=settings)) as client:
        for start in range(0, len(validation), 8):
            assert client.post("/v1/route", json={"texts": validation[start:start + 8]}).status_code == 200
        deadline = time.time() + 30
        while (body := client.get("/v1/drift").json())["report"] is None:
            assert time.time() < deadline, body
            time.sleep(0.05)
    drift = body["report"]
    assert drift["label_shift"] == pytest.approx(0.0, abs=1e-6) and drift["psi_confidence"] < 0.05
    assert drift["domain_auc"] is not None and drift["fallback_rate"] == pytest.approx(drift["fallback_rate_baseline"])
    estimate = body["accuracy_estimate"]  # the window is the validation split: the estimate is its exact-set accuracy
    assert estimate["status"] == "ok" and estimate["method"] == f"ATC ({SET_SCORE})"
    assert estimate["estimate"] == pytest.approx(estimate["validation_accuracy"], abs=1 / len(validation))


def test_a_multi_label_baseline_saved_before_fits_says_so(ml_run, tmp_path):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(ml_run[0], run)
    meta_path = run / "model" / "drift_baseline.json"
    meta = json.loads(meta_path.read_text())
    meta["accuracy_estimate"] = None
    meta_path.write_text(json.dumps(meta))
    baseline = load_drift_baseline(run)
    assert baseline.accuracy is None and baseline.accuracy_note == MULTILABEL_ACCURACY_NOTE


def test_select_reads_a_multi_label_run_by_its_thresholds(ml_run, tmp_path):
    run_dir, _, _ = ml_run
    run = verticals.load(run_dir)
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(TEXTS) + "\n")
    rows = run.select(queries, 4, strategy="margin")
    probs = run.predict_proba(TEXTS)
    distance = np.abs(probs - run.multi_label.thresholds[None, :]).min(axis=1)
    assert [r["text"] for r in rows] == [TEXTS[i] for i in np.argsort(distance, kind="stable")]
    assert [r["score"] for r in rows] == pytest.approx(sorted(np.round(distance, 4)), abs=1e-4)
    assert all(r["reason"].startswith("closest call: ") and "threshold" in r["reason"] for r in rows)
    assert len(run.select(queries, 2, strategy="badge", seed=0)) == 2


def test_run_export_hf_writes_the_multi_label_card(ml_run, tmp_path):
    run_dir, _, _ = ml_run
    out = verticals.load(run_dir).export_hf(tmp_path / "hf")
    card = (out / "README.md").read_text()
    assert "multi-label text classifier (a sigmoid per label)" in card and "threshold" in card
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
