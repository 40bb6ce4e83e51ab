"""The Python API (verticals.api): train -> predict / evaluate / route / app, load anywhere, the
monitor and the recommender, all quiet unless asked, and the trained-model contract it rests on
(core.models.predictor: Predictor, load_run; core.confidence.ood.OutOfScopeDetector)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import verticals
from core.foundation.errors import UserError
from core.models.predictor import Predictor, load_run
from tests.finance.conftest import KeywordModel, demo_stream_dir


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "demo"
    return verticals.train("support/intent-demo", max_steps=2, backbone="tiny", out=out)


def test_train_returns_a_run_that_predicts_like_the_command_line(demo_run, capsys):
    from verticals.cli import main

    rows = demo_run.predict(["lost my card", "where is my transfer"])
    assert [r["text"] for r in rows] == ["lost my card", "where is my transfer"]
    assert all(r["label"] in demo_run.labels and 0 < r["confidence"] <= 1 and len(r["top_k"]) == 3 for r in rows)
    one = demo_run.predict("lost my card", top_k=1)
    assert one["label"] == rows[0]["label"] and len(one["top_k"]) == 1
    capsys.readouterr()
    assert main(["predict", str(demo_run.path), "lost my card", "where is my transfer"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == rows
    assert demo_run.predict([]) == []
    probs = demo_run.predict_proba(["lost my card"])
    assert probs.shape == (1, len(demo_run.labels)) and abs(probs.sum() - 1) < 1e-5


def test_bad_texts_are_refused_with_a_user_error(demo_run):
    with pytest.raises(UserError, match="text 2"):
        demo_run.predict(["fine", "\u200b"])
    with pytest.raises(UserError, match="not a string"):
        demo_run.predict([b"bytes"])


def test_evaluate_rebuilds_the_test_split_the_run_reported(demo_run):
    result = demo_run.evaluate()
    assert result["n"] == demo_run.metrics["test"]["n"]
    assert result["accuracy"] == pytest.approx(demo_run.metrics["test"]["accuracy"])
    assert "oos" in result["out_of_scope"]
    assert demo_run.evaluate(split="validation")["n"] == demo_run.metrics["validation"]["n"]


def test_load_takes_the_run_or_its_model_folder_and_refuses_anything_else(demo_run, tmp_path):
    again = verticals.load(demo_run.path / "model")
    assert isinstance(again, verticals.Run) and again.labels == demo_run.labels
    assert again.predict("lost my card") == demo_run.predict("lost my card")
    with pytest.raises(UserError, match="does not exist"):
        verticals.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a trained classifier"):
        verticals.load(tmp_path / "empty")
    with pytest.raises(UserError, match="unknown runtime"):
        verticals.load(demo_run.path, runtime="tensorrt")


def test_every_runtime_is_a_predictor_with_an_out_of_scope_detector(demo_run):
    model = load_run(demo_run.path)
    assert isinstance(model, Predictor)
    assert isinstance(model.ood, verticals.OutOfScopeDetector)
    texts = ["lost my card", "what is the weather like on mars"]
    logits, embeddings = model.predict_all(texts)
    flags = model.ood.is_out_of_scope(logits, embeddings, model.temperature)
    assert flags.shape == (2,) and flags.dtype == bool
    demo_run.export_onnx()
    onnx = verticals.load(demo_run.path, runtime="onnx")
    assert isinstance(onnx.model, Predictor)
    assert onnx.model.ood.describe() == model.ood.describe()
    np.testing.assert_allclose(onnx.predict_proba(texts), model.predict_proba(texts), atol=1e-4)
    empty_logits, empty_embeddings = onnx.model.predict_all([])
    assert empty_logits.shape == (0, len(model.labels)) and empty_embeddings.shape[0] == 0
    ev = verticals.load(demo_run.path, runtime="onnx").evaluate()
    assert ev["accuracy"] == pytest.approx(demo_run.metrics["test"]["accuracy"], abs=0.02)


def test_the_detector_saves_and_loads_with_the_same_scores(tmp_path):
    from core.confidence.ood import OutOfScopeDetector

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 8)).astype(np.float32)
    labels = [i % 4 for i in range(40)]
    val_logits, val_emb = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    detector = OutOfScopeDetector.fit("knn_energy", train, labels, val_logits, val_emb, target_recall=0.9)
    in_scope = detector.scores(val_logits, val_emb) >= detector.threshold
    assert in_scope.mean() >= 0.9
    description = detector.save(tmp_path)
    again = OutOfScopeDetector.load(tmp_path, json.loads(json.dumps(description)))
    np.testing.assert_array_equal(again.scores(val_logits, val_emb), detector.scores(val_logits, val_emb))
    assert again.describe() == detector.describe() and OutOfScopeDetector.load(tmp_path, None) is None


def test_route_and_the_http_app(demo_run):
    from fastapi.testclient import TestClient

    row = demo_run.route("lost my card")
    assert set(row) >= {"intent", "confidence", "queue", "handover", "fallback_reason"}
    with TestClient(demo_run.app(min_confidence=0.0, min_margin=0.0, token="s3cret")) as client:
        assert client.post("/v1/route", json={"texts": ["lost my card"]}).status_code == 401
        reply = client.post("/v1/route", json={"texts": ["lost my card"]}, headers={"Authorization": "Bearer s3cret"})
        assert reply.status_code == 200, reply.text
    with pytest.raises(UserError, match="public"):
        demo_run.app(public=["everything"])


def test_the_api_is_quiet_unless_asked(tmp_path, capfd):
    verticals.train("support/intent-demo", max_steps=1, backbone="tiny", train_limit=16, out=tmp_path / "q")
    quiet = capfd.readouterr()
    assert quiet.out == "" and "it/s" not in quiet.err and "%|" not in quiet.err and "Warning" not in quiet.err
    verticals.train("support/intent-demo", max_steps=1, backbone="tiny", train_limit=16, out=tmp_path / "p",
                    progress=True)
    assert "step" in capfd.readouterr().err  # the engine's progress bar


def test_train_refuses_bad_settings_by_name(tmp_path):
    with pytest.raises(UserError, match="(?i)did you mean"):
        verticals.train("support/intent-demo", epoch=2, out=tmp_path / "x")
    with pytest.raises(UserError, match="unknown recipe"):
        verticals.train("support/nope", out=tmp_path / "x")
    with pytest.raises(UserError, match="resume=True needs out"):
        verticals.train("support/intent-demo", resume=True)


def test_monitor_runs_files_and_durable_in_memory_batches(tmp_path):
    demo = demo_stream_dir()
    monitor = verticals.monitor(KeywordModel(), db=tmp_path / "m.db", watchlist=demo / "watchlist.yaml")
    stats = monitor.run(demo / "stream.jsonl")
    assert stats.totals["documents"] == 394
    assert any(a["entity"] == "BRDG" and a["rule"] == "negative_share_spike" for a in monitor.alerts())
    docs = [{"id": f"api{i}", "ts": f"2026-03-20T09:{i:02d}:00Z", "text": "Acme Corp holds its annual meeting",
             "tickers": ["ACME"]} for i in range(3)]
    assert monitor.ingest(docs).new_documents == 3
    assert monitor.ingest(docs).already_seen == 3  # a retried batch adds nothing
    assert monitor.counts()["documents"] == 397 and len(list((tmp_path / "m.db.inbox").glob("*.jsonl"))) == 2
    assert monitor.timeline("ACME")
    assert monitor.report(tmp_path / "r.html").read_text().startswith("<!")
    with pytest.raises(UserError, match="one JSON line"):
        monitor.ingest(['{"id": 1,\n "text": "x"}'])


def test_recommender_index_and_load(tmp_path, tiny_backbone_dir):
    rec = verticals.index("demo_catalog", tmp_path / "index", model="tiny")
    user = sorted(rec.catalog.histories)[0]
    assert len(rec.recommend_for_user(user, k=3)) == 3
    item = rec.index.ids[0]
    assert item not in [i for i, _ in rec.similar_to_item(item, k=3)]
    rec.add_item("new-1", "a brand new thing")
    rec.close()
    again = verticals.load(tmp_path / "index")
    assert "new-1" in again.index  # the write was journaled
    again.close()
    with pytest.raises(UserError, match="unknown user"):
        verticals.load(tmp_path / "index").recommend_for_user("nobody")


def test_an_item_encoder_run_loads_as_one_and_indexes(tmp_path, tiny_backbone_dir):
    run = verticals.train("recsys/item-encoder", data="demo_catalog", backbone="tiny", steps=2, batch_size=4,
                          min_support=1, out=tmp_path / "enc")
    assert isinstance(run, verticals.EncoderRun) and isinstance(verticals.load(run.path), verticals.EncoderRun)
    rec = run.index("demo_catalog", tmp_path / "idx")
    assert len(rec.index) > 0
    rec.close()
    with pytest.raises(UserError, match="recsys-item-encoder run without a classifier"):
        load_run(run.path)
