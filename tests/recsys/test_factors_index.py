"""ALS and BPR served through the one index (solutions.recsys.factors_index): the ranking the HTTP
service returns is the ranking the offline protocol scores, events change the next answer, and a
text has no vector in it."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from core.serving.app import ServiceLimits
from solutions.recsys.data import load_interactions
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.factors_index import build_factor_index, load_factor_model
from solutions.recsys.live import Recommender
from solutions.recsys.protocol import evaluate_scores, ranking_metrics, split_dataset
from tests.http_helpers import running

LIMITS = ServiceLimits()


MODELS = {"als": lambda: ALS(factors=8, regularization=0.1, alpha=10.0, iterations=10, seed=0),
          "bpr": lambda: BPR(factors=8, learning_rate=0.05, iterations=50, seed=0)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, tmp_path_factory):
    data = load_interactions("demo_catalog")
    split = split_dataset(data)  # latest 20% of each user's interactions held out
    model = MODELS[request.param]().fit(split)
    out = tmp_path_factory.mktemp(f"{request.param}-index")
    build_factor_index(model, data, out)
    return data, split, model, out


def test_the_saved_model_folds_users_in_exactly_as_the_fitted_one(fitted):
    _, split, model, out = fitted
    served, _ = load_factor_model(out)
    histories = [split.history(u) for u in split.eval_users()[:5]]
    np.testing.assert_array_equal(served.model.user_factors(histories), model.user_factors(histories))


def test_ndcg_through_http_equals_the_offline_ndcg_of_the_same_model(fitted):
    from solutions.recsys.service import create_app

    _, split, model, out = fitted
    users = split.eval_users()
    offline = evaluate_scores(lambda chunk: model.score([split.history(u) for u in chunk]), split, users=users)
    rec = Recommender.load(out)
    try:
        with running(create_app(rec, limits=LIMITS), LIMITS) as base, httpx.Client(base_url=base, timeout=30) as http:
            ranked = []
            for user in users:
                history = [item for item, _ in split.history(user)]
                r = http.post("/v1/recommend", json={"items": history, "k": 10})
                assert r.status_code == 200, r.text
                ranked.append([hit["id"] for hit in r.json()["items"]])
            refused = http.post("/v1/items", json={"id": "brand-new", "text": "a new item"})
            assert refused.status_code == 400 and "serves ALS/BPR item factors" in refused.json()["error"]
    finally:
        rec.close()
    served = ranking_metrics(ranked, [split.relevant(u) for u in users], len(split.items))
    assert len(users) >= 20 and offline["ndcg@10"] > 0
    assert abs(served["ndcg@10"] - offline["ndcg@10"]) <= 1e-6
    assert abs(served["recall@10"] - offline["recall@10"]) <= 1e-6


def test_an_event_changes_the_next_answer_and_a_text_has_no_vector(fitted, tmp_path):
    data, split, model, _ = fitted
    out = tmp_path / "idx"
    build_factor_index(model, data, out)
    rec = Recommender.load(out)
    try:
        user = split.eval_users()[0]
        before = rec.recommend_for_user(user, k=5)
        assert rec.add_events([type(data.interactions[0])(user, before[0][0], 1_767_225_600.0, None)]) == [None]
        after = rec.recommend_for_user(user, k=5)
        assert before[0][0] not in [item for item, _ in after] and after != before
        with pytest.raises(Exception, match="serves ALS/BPR item factors"):
            rec.add_item("brand-new", "a text")
    finally:
        rec.close()


@pytest.mark.parametrize("kind", ["als", "bpr"])
def test_recsys_index_builds_a_factor_index_from_the_command_line(tmp_path, kind):
    out = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "index", "demo_catalog", "--model", kind,
                           "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and kind.upper() in done.stdout, done.stderr
    rec = Recommender.load(out)
    try:
        assert rec.user_model is not None and len(rec.recommend(["i001", "i002"], k=3)) == 3
    finally:
        rec.close()
