"""The intent-routing HTTP service, started for real on loopback."""

import socket
import threading
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(support_run):
    import uvicorn

    from solutions.support.router import IntentRouter
    from core.serving.server import uvicorn_config
    from core.serving.app import ServiceLimits
    from solutions.support.service import create_app

    router = IntentRouter.from_run(support_run)
    limits = ServiceLimits(max_chars=200, max_batch=8, max_body_bytes=20_000)
    app = create_app(router.route_batch, info=router.describe(), token="s3cret", limits=limits)
    port = _free_port()
    srv = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    client = httpx.Client(base_url=base, headers={"Authorization": "Bearer s3cret"}, timeout=30)
    yield client
    client.close()
    srv.should_exit = True
    thread.join(timeout=10)


def test_route_one_text(server):
    r = server.post("/v1/route", json={"text": "my card was declined"})
    assert r.status_code == 200
    body = r.json()
    assert body["intent"] == "card" and {"confidence", "queue", "top_k", "fallback_reason"} <= set(body)


def test_route_a_batch_keeps_order(server):
    r = server.post("/v1/route", json={"texts": ["transfer to another bank", "my card was declined"]})
    assert r.status_code == 200
    assert [x["intent"] for x in r.json()["routes"]] == ["transfer", "card"]


@pytest.mark.parametrize("payload,status,message", [
    ({"text": ""}, 422, "empty"),
    ({"text": "   "}, 422, "whitespace"),
    ({"text": 42}, 422, "text"),
    ({"texts": "not a list"}, 422, "texts"),
    ({"texts": []}, 422, "at least one"),
    ({"text": "a", "texts": ["b"]}, 422, "exactly one"),
    ({}, 422, "exactly one"),
    ({"text": "x" * 201}, 413, "at most 200"),
    ({"texts": ["card"] * 9}, 413, "at most 8"),
    ({"txt": "hello"}, 422, "txt"),
])
def test_bad_requests_get_4xx_with_a_message(server, payload, status, message):
    r = server.post("/v1/route", json=payload)
    assert r.status_code == status and message in r.json()["error"]


def test_oversized_body_and_bad_json(server):
    r = server.post("/v1/route", content=b'{"text": "' + b"a" * 30_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = server.post("/v1/route", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_bearer_token_is_required(server):
    r = httpx.post(f"{server.base_url}/v1/route", json={"text": "card"})
    assert r.status_code == 401 and "bearer token" in r.json()["error"]


def test_health_ready_metrics_and_openapi(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz").json()
    assert ready["status"] == "ready" and ready["out_of_scope"]["scorer"] == "knn_energy"
    server.post("/v1/route", json={"text": "my card was declined"})
    metrics = server.get("/metrics").text
    assert "verticals_requests_total" in metrics and "verticals_route_latency_seconds_bucket" in metrics
    assert 'verticals_requests_total{path="/v1/route",status="200"}' in metrics  # counted by path and status

    def too_large() -> float:
        line = 'verticals_requests_total{path="/v1/route",status="413"} '
        return sum(float(x[len(line):]) for x in server.get("/metrics").text.splitlines() if x.startswith(line))

    before = too_large()
    server.post("/v1/route", content=b"x" * 30_000, headers={"content-type": "application/json"})
    assert too_large() == before + 1
    assert "/v1/route" in server.get("/openapi.json").json()["paths"]


def test_concurrent_requests_are_all_answered(server):
    from concurrent.futures import ThreadPoolExecutor

    texts = ["my card was declined", "transfer to another bank"] * 20
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: server.post("/v1/route", json={"text": t}), texts))
    assert all(r.status_code == 200 for r in results)
    assert [r.json()["intent"] for r in results] == ["card", "transfer"] * 20
