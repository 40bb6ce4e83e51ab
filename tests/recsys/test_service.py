"""The HTTP router over a real uvicorn server on loopback, with a live index."""

import socket
import threading
import time

import httpx
import pytest

from core.serving.server import uvicorn_config
from solutions.recsys.catalog import Catalog, item_metadata, user_histories
from solutions.recsys.content import TextEncoder, embed_catalog
from solutions.recsys.data import load_interactions
from solutions.recsys.index import ItemIndex
from solutions.recsys.service import Recommender, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_backbone_dir):
    import uvicorn

    data = load_interactions("demo_catalog")
    items = sorted(data.items)
    encoder = TextEncoder.load("tiny")
    index = ItemIndex.build(items, embed_catalog(encoder, items, data.items), "HNSW32",
                            item_metadata("demo_catalog", ["category"]))
    state = Recommender(index, encoder, Catalog("tiny", encoder.max_length, 20.0, user_histories(data)))
    port = free_port()
    srv = uvicorn.Server(uvicorn_config(create_app(state), "127.0.0.1", port))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client, state
    srv.should_exit = True
    thread.join(timeout=10)


def ids(response):
    return [hit["id"] for hit in response.json()["items"]]


def test_recommend_for_a_known_user_excludes_their_history(server):
    client, state = server
    r = client.post("/v1/recommend", json={"user_id": "u01", "k": 5})
    assert r.status_code == 200 and len(ids(r)) == 5
    assert not set(ids(r)) & set(state.catalog.histories["u01"])


def test_recommend_from_recent_items_with_a_filter(server):
    client, state = server
    r = client.post("/v1/recommend", json={"items": ["i001", "i005"], "k": 5, "filter": {"category": "toys"}})
    assert r.status_code == 200 and ids(r)
    assert all(state.index.metadata[i]["category"] == "toys" for i in ids(r))
    assert not {"i001", "i005"} & set(ids(r))


def test_similar_by_item_and_by_text(server):
    client, _ = server
    r = client.post("/v1/similar", json={"item_id": "i003", "k": 3})
    assert r.status_code == 200 and "i003" not in ids(r) and len(ids(r)) == 3
    r = client.post("/v1/similar", json={"text": "rechargeable headlamp for camping", "k": 3})
    assert r.status_code == 200 and len(ids(r)) == 3


def test_items_added_updated_and_deleted_change_the_live_index(server):
    client, state = server
    r = client.post("/v1/items", json={"id": "new-1", "text": "Camping lantern with solar charging",
                                       "metadata": {"category": "outdoor"}})
    assert r.status_code == 201 and "new-1" in state.index
    r = client.post("/v1/similar", json={"text": "Camping lantern with solar charging", "k": 1})
    assert ids(r) == ["new-1"]
    assert client.post("/v1/items", json={"id": "new-1", "text": "again"}).status_code == 409
    r = client.put("/v1/items/new-1", json={"text": "Kids' wooden puzzle", "metadata": {"category": "toys"}})
    assert r.status_code == 200 and state.index.metadata["new-1"] == {"category": "toys"}
    assert client.delete("/v1/items/new-1").status_code == 200
    assert "new-1" not in state.index
    r = client.post("/v1/similar", json={"text": "Kids' wooden puzzle", "k": 50})
    assert "new-1" not in ids(r)


@pytest.mark.parametrize("method,path,payload,status,message", [
    ("post", "/v1/recommend", {"user_id": "nobody"}, 404, "unknown user id 'nobody'"),
    ("post", "/v1/recommend", {"items": ["i001", "zzz"]}, 404, "unknown item id"),
    ("post", "/v1/recommend", {}, 400, "exactly one of 'user_id' or 'items'"),
    ("post", "/v1/recommend", {"items": []}, 400, "at least one item"),
    ("post", "/v1/recommend", {"user_id": "u01", "k": 0}, 422, "greater than or equal to 1"),
    ("post", "/v1/similar", {"item_id": "zzz"}, 404, "unknown item id 'zzz'"),
    ("post", "/v1/similar", {"item_id": "i001", "text": "x"}, 400, "exactly one of"),
    ("post", "/v1/similar", {"text": "   "}, 422, "empty"),
    ("put", "/v1/items/zzz", {"text": "x"}, 404, "unknown item id 'zzz'"),
    ("delete", "/v1/items/zzz", None, 404, "unknown item id 'zzz'"),
    ("post", "/v1/items", {"id": "x"}, 422, "text"),
])
def test_bad_ids_and_payloads_get_a_4xx_with_a_message(server, method, path, payload, status, message):
    client, _ = server
    r = client.request(method.upper(), path, json=payload)
    assert r.status_code == status and message in r.text


def test_malformed_json_is_a_4xx(server):
    client, _ = server
    r = client.post("/v1/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
