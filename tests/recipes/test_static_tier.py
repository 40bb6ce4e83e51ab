"""The packaged static recipes on the tiny backbone, in the products: the intent router and its HTTP
service, `verticals predict` / `eval`, and the finance monitor's scorer over the demo stream."""

from __future__ import annotations

import json
import sqlite3

import pytest

pytest.importorskip("model2vec", reason="the static tier needs the static extra: pip install -e '.[static]'")

from core.classify.config import load_recipe_file
from core.classify.recipes import run_recipe
from tests.conftest import write_csv, write_toy_splits
from verticals.registry import RECIPES

TINY = {"backbone": "tiny", "static.pca_dims": "16", "probe_c": "100"}


@pytest.fixture(scope="module")
def intent_run(tmp_path_factory):
    data = write_toy_splits(tmp_path_factory.mktemp("intents"))
    cfg = load_recipe_file(RECIPES["support/intent-static"], TINY | {"data": str(data), "label_names": "false"},
                           name="support/intent-static")
    run = tmp_path_factory.mktemp("intent-static") / "run"
    run_recipe(cfg, run, progress=False)
    return run


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment-static")
    rows = [("profit rose and sales increased", "positive"), ("shares fell after the loss", "negative"),
            ("the company is based in helsinki", "neutral")] * 8
    cfg = load_recipe_file(RECIPES["finance/sentiment-static"],
                           TINY | {"data": str(write_csv(root / "sentiment.csv", rows))}, name="finance/sentiment-static")
    run_recipe(cfg, root / "run", progress=False)
    return root / "run"


def test_the_router_routes_with_a_static_run_and_scores_out_of_scope(intent_run):
    from solutions.support.router import IntentRouter

    router = IntentRouter.from_run(intent_run)
    routes, embeddings = router.route_all(["my card was declined", "my transfer is pending"])
    assert [r["intent"] for r in routes] == ["card", "transfer"] and embeddings.shape == (2, 16)
    assert all(r["in_scope_score"] is not None for r in routes)  # the recipe's knn_energy scorer came along
    assert router.describe()["out_of_scope"]["scorer"] == "knn_energy"
    assert router.route_batch([]) == []


def test_the_support_service_answers_over_a_static_run(intent_run):
    from fastapi.testclient import TestClient

    from core.serving.app import ServiceLimits
    from solutions.support.router import IntentRouter
    from solutions.support.service import create_app

    router = IntentRouter.from_run(intent_run)
    app = create_app(router.route_batch, info=router.describe(), limits=ServiceLimits(max_chars=200, max_batch=8))
    with TestClient(app) as client:
        ok = client.post("/v1/route", json={"texts": ["transfer to another bank", "my card was declined"]})
        too_long = client.post("/v1/route", json={"text": "card " * 100})
        empty = client.post("/v1/route", json={"text": "  "})
    assert ok.status_code == 200 and [r["intent"] for r in ok.json()["routes"]] == ["transfer", "card"]
    assert too_long.status_code in (400, 413, 422) and empty.status_code in (400, 422)


def test_verticals_predict_and_eval_take_a_static_run(intent_run, capsys):
    from verticals.cli import main

    assert main(["predict", str(intent_run), "card declined at the shop"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["label"] == "card" and 0.5 < row["confidence"] <= 1
    assert main(["eval", str(intent_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.75
    assert main(["predict", str(intent_run), "x", "--runtime", "onnx"]) != 0
    assert "no ONNX twin" in capsys.readouterr().err


def test_the_finance_monitor_scores_the_demo_stream_with_a_static_run(sentiment_run, tmp_path):
    import verticals
    from core.models.predictor import load_run
    from solutions.finance.monitor.scoring import Scored, score_documents
    from solutions.finance.monitor.sources import Document
    from tests.finance.conftest import demo_stream_dir

    model = load_run(sentiment_run)
    docs = [Document("1", 0.0, "t", "Acme profit rose and sales increased."),
            Document("2", 0.0, "t", "shares fell after the loss " * 5_000)]
    scored = score_documents(model, docs, batch_size=8)
    assert all(isinstance(s, Scored) for s in scored)
    assert scored[0].document["label"] == "positive" and scored[1].document["label"] == "negative"
    db = tmp_path / "risk.db"
    verticals.monitor(str(sentiment_run), db).run(demo_stream_dir())
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM scores").fetchone()[0] > 0
