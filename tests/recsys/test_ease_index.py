"""EASE served by scoring (solutions.recsys.ease_index): the ranking the HTTP service returns is the
ranking the offline protocol scores, items EASE does not cover rank after the ones it does, events
change the next answer without a refit, and bad input is a 4xx."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.serving.app import ServiceLimits
from solutions.recsys.baselines import EASE
from solutions.recsys.data import load_interactions
from solutions.recsys.ease_index import build_ease_index, load_ease
from solutions.recsys.live import Recommender
from solutions.recsys.protocol import evaluate_scores, rank_items, ranking_metrics, split_dataset

LIMITS = ServiceLimits()


def _build(model, data, out):
    return build_ease_index(model, data, out, encoder="tiny", data_spec="demo_catalog", metadata_columns=("category",))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_backbone_dir):
    """EASE fitted on the demo catalog's training part (the latest 20% of each user held out)."""
    data = load_interactions("demo_catalog")
    split = split_dataset(data)
    model = EASE(l2=50.0).fit(split)
    out = tmp_path_factory.mktemp("ease-index")
    _build(model, data, out)
    return data, split, model, out


@pytest.fixture
def client(fitted, tmp_path):
    """The HTTP app over a fresh copy of the index (writes do not leak between tests)."""
    from solutions.recsys.service import create_app

    data, _, model, _ = fitted
    _build(model, data, tmp_path / "idx")
    rec = Recommender.load(tmp_path / "idx")
    with TestClient(create_app(rec, limits=LIMITS)) as http:
        yield http, rec


def test_the_saved_model_scores_exactly_as_the_fitted_one(fitted):
    _, split, model, out = fitted
    served, meta = load_ease(out)
    histories = [split.history(u) for u in split.eval_users()[:5]]
    np.testing.assert_array_equal(served.score(histories), model.score(histories))
    assert meta["kind"] == "ease" and meta["l2"] == 50.0 and served.weights.dtype == np.float32
    assert not list(out.glob("*.pkl")) and not list(out.glob("*.pickle"))


def test_ndcg_through_http_equals_the_offline_ndcg_of_the_same_model(fitted, client):
    _, split, model, _ = fitted
    http, rec = client
    assert rec.scorer is not None
    users = split.eval_users()
    offline = evaluate_scores(lambda chunk: model.score([split.history(u) for u in chunk]), split, users=users)
    ranked, expected = [], []
    for user in users:
        history = [item for item, _ in split.history(user)]
        r = http.post("/v1/recommend", json={"items": history, "k": 10})
        assert r.status_code == 200, r.text
        ranked.append([hit["id"] for hit in r.json()["items"]])
        expected += rank_items(model.score([split.history(user)]), split.items, [split.seen(user)], 10)
    served = ranking_metrics(ranked, [split.relevant(u) for u in users], len(split.items))
    assert len(users) >= 20 and offline["ndcg@10"] > 0
    assert abs(served["ndcg@10"] - offline["ndcg@10"]) <= 1e-6
    assert abs(served["recall@10"] - offline["recall@10"]) <= 1e-6
    assert ranked == expected  # the very lists, not only their metric


def test_the_whole_ranking_matches_and_uncovered_items_come_last(fitted, client):
    _, split, model, _ = fitted
    http, rec = client
    user = split.eval_users()[0]
    history = [item for item, _ in split.history(user)]
    assert http.post("/v1/items", json={"id": "a-new-item", "text": "a brand new garden hose",
                                        "metadata": {"category": "garden"}}).status_code == 201
    gone = next(model.items[i] for i in model.active if model.items[i] not in history)
    assert http.delete(f"/v1/items/{gone}").status_code == 200
    everything = [hit["id"] for hit in http.post("/v1/recommend", json={"items": history, "k": 1000}).json()["items"]]
    offline = rank_items(model.score([split.history(user)]), split.items, [set(history)], len(split.items))[0]
    assert everything == [item for item in offline if item != gone] + ["a-new-item"]
    covered = {model.items[i] for i in model.active}
    first_cold = next(i for i, item in enumerate(everything) if item not in covered)
    assert all(item not in covered for item in everything[first_cold:])  # nothing covered below an uncovered item
    garden = http.post("/v1/recommend", json={"items": history, "k": 5, "filter": {"category": "garden"}}).json()
    assert [h["id"] for h in garden["items"]] == [i for i in everything if rec.index.metadata[i]["category"]
                                                   == "garden"][:5]
    similar = http.post("/v1/similar", json={"text": "garden hose", "k": 3})
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3  # the text vectors serve `similar`
    only_new = http.post("/v1/recommend", json={"items": ["a-new-item"], "k": 3})
    assert only_new.status_code == 200 and len(only_new.json()["items"]) == 3  # nothing covered: the text path


def test_an_event_changes_the_next_answer_without_a_refit(fitted, client):
    _, split, _, _ = fitted
    http, rec = client
    user = split.eval_users()[0]
    before = http.post("/v1/recommend", json={"user_id": user, "k": 5}).json()["items"]
    taken = http.post("/v1/events", json={"user": user, "item": before[0]["id"], "rating": 5})
    assert taken.status_code == 200, taken.text
    after = http.post("/v1/recommend", json={"user_id": user, "k": 5}).json()["items"]
    assert before[0]["id"] not in [hit["id"] for hit in after] and after != before
    assert rec.catalog.histories[user][-1] == before[0]["id"]


@pytest.mark.parametrize("path,body,status", [
    ("/v1/recommend", b'{"items": ["no-such-item"], "k": 5}', 404),
    ("/v1/recommend", b'{"user_id": "no-such-user"}', 404),
    ("/v1/recommend", b'{"items": ["i002"], "k": NaN}', 400),
    ("/v1/recommend", b'{"items": ["i002"], "k": 0}', 422),
    ("/v1/recommend", b'{"items": []}', 400),
    ("/v1/recommend", b'{"items": ["i002"], "filter": {"category": 3}}', 422),
    ("/v1/events", b'{"user": "u01", "item": "no-such-item"}', 404),
    ("/v1/events", b'{"user": "u01", "item": "i002", "rating": NaN}', 400),
    ("/v1/similar", b'{"item_id": "no-such-item"}', 404),
])
def test_bad_input_is_a_4xx_with_a_reason(client, path, body, status):
    http, _ = client
    r = http.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and r.json()["error"], r.text
