"""The recsys service under hostile input, over real HTTP with a live index: auth on writes,
JSON the old service answered with a 500, ids with '/', size limits, and schema-driven fuzzing."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from core.serving.app import Access, ServiceLimits
from tests.http_helpers import running

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = ServiceLimits(max_chars=300, max_body_bytes=50_000, max_id_chars=64)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _state(tmp_path):
    from solutions.recsys.catalog import Catalog, item_metadata, user_histories
    from solutions.recsys.content import TextEncoder, embed_catalog
    from solutions.recsys.data import load_interactions
    from solutions.recsys.index import ItemIndex
    from solutions.recsys.live import Recommender

    data = load_interactions("demo_catalog")
    items = sorted(data.items)
    encoder = TextEncoder.load("tiny")
    index = ItemIndex.build(items, embed_catalog(encoder, items, data.items), "Flat", item_metadata("demo_catalog", ["category"]))
    index.save(tmp_path)
    Catalog("tiny", encoder.max_length, 20.0, user_histories(data)).save(tmp_path)
    return Recommender.load(tmp_path)


def _schema():
    from unittest.mock import MagicMock

    from solutions.recsys.service import create_app

    return schemathesis.openapi.from_dict(create_app(MagicMock(), access=Access(token=TOKEN)).openapi())


SCHEMA = _schema()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_backbone_dir):
    from solutions.recsys.service import create_app

    state = _state(tmp_path_factory.mktemp("recsys-hostile"))
    with running(create_app(state, access=Access(token=TOKEN), limits=LIMITS), LIMITS) as base:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            reference = client.post("/v1/similar", json={"item_id": "i001", "k": 5}).json()
            yield client, state, reference
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.post("/v1/similar", json={"item_id": "i001", "k": 5}).status_code == 200


def test_writes_and_reads_need_the_token(live):
    client, state, _ = live
    base = str(client.base_url)
    for method, path, body in (("POST", "/v1/items", {"id": "x1", "text": "a lamp"}),
                               ("PUT", "/v1/items/i001", {"text": "a lamp"}),
                               ("DELETE", "/v1/items/i001", None),
                               ("POST", "/v1/similar", {"item_id": "i001"})):
        r = httpx.request(method, f"{base}{path}", json=body)
        assert r.status_code == 401, (method, path)
    assert "x1" not in state.index and "i001" in state.index
    assert httpx.get(f"{base}/healthz").status_code == 200


@pytest.mark.parametrize("body,status,message", [
    (b'{"id": "n1", "text": "lamp", "metadata": {"price": NaN}}', 400, "NaN"),
    (b'{"id": "n1", "text": "lamp", "metadata": {"price": Infinity}}', 400, "Infinity"),
    (b'{"id": "n1", "text": "\\ud800"}', 400, "surrogate"),
    (b'{"id": "\\udc00", "text": "lamp"}', 400, "surrogate"),
    (b'{"id": "n1", "text": "\\u200b"}', 422, "no visible"),
    (b'{"id": "' + b"x" * 65 + b'", "text": "lamp"}', 422, "characters"),
    (b'{"id": "n1", "text": "' + b"a" * 301 + b'"}', 413, "at most 300"),
    (b'{"id": "n1", "text": "lamp", "metadata": {"a": {"b": 1}}}', 422, "metadata"),
    (b'{"id": "n1", "text": "lamp"' + b" " * 60_000 + b"}", 413, "body over"),
])
def test_bad_item_payloads_get_a_4xx_and_change_nothing(live, body, status, message):
    client, state, _ = live
    before = len(state.index)
    r = client.post("/v1/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]
    assert len(state.index) == before and "n1" not in state.index


def test_an_id_with_a_slash_can_be_added_updated_and_deleted(live):
    client, state, _ = live
    assert client.post("/v1/items", json={"id": "shop/a b/1", "text": "solar lantern"}).status_code == 201
    assert client.put("/v1/items/shop/a b/1", json={"text": "solar camping lantern"}).status_code == 200
    assert client.post("/v1/similar", json={"item_id": "shop/a b/1", "k": 3}).status_code == 200
    assert client.delete("/v1/items/shop/a b/1").status_code == 200
    assert "shop/a b/1" not in state.index


def test_readiness_details_need_the_token(live):
    client, _, _ = live
    assert httpx.get(f"{client.base_url}/readyz").json() == {"status": "ready"}
    assert client.get("/readyz").json()["items"] >= 1


@SCHEMA.parametrize()
@FUZZ
def test_schema_driven_fuzzing_finds_no_5xx(live, case):
    client, _, _ = live
    response = case.call(base_url=str(client.base_url), headers=AUTH)
    assert response.status_code < 500, response.text
