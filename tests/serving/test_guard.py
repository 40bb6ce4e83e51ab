"""The serving skeleton (core.serving.app) over real HTTP on loopback, with a stub service: what a
hostile or broken client can send, and what it gets back."""

import socket
import time

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel, StrictStr

from core.serving.app import Access, ServiceLimits, check_texts, create_service, json_body_problem
from tests.http_helpers import raw_exchange, running, status_of

LIMITS = ServiceLimits(max_chars=100, max_body_bytes=10_000, request_timeout_s=1.0, max_header_bytes=4_000)


class Echo(BaseModel):
    text: StrictStr


def stub_app(access=Access(), limits=LIMITS):
    router = APIRouter()

    @router.post("/v1/echo")
    def echo(body: Echo):
        return {"text": check_texts([body.text], limits, "text")[0]}

    @router.get("/v1/boom")
    def boom():
        raise RuntimeError("a bug")

    @router.delete("/v1/items/{item_id:path}")
    def delete(item_id: str):
        return {"id": item_id}

    return create_service("stub", (router,), access=access, limits=limits, info=lambda: {"threshold": 0.42})


@pytest.fixture(scope="module")
def open_server():
    with running(stub_app(), LIMITS) as base:
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client


@pytest.fixture(scope="module")
def token_server():
    with running(stub_app(Access(token="s3cret")), LIMITS) as base:
        yield base


# --- pure checks ---

@pytest.mark.parametrize("body,problem", [
    (b'{"text": "ok"}', None),
    (b'{"text": "\\ud800"}', "surrogate"),
    (b'{"text": "\xed\xa0\x80"}', "UTF-8"),
    (b'{"text": "\xff"}', "UTF-8"),
    (b'{"x": NaN}', "NaN"),
    (b'{"x": -Infinity}', "Infinity"),
    (b'{"x": 1e400}', "finite"),
    (b'{"x": ' + b"9" * 5000 + b"}", "digits"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[" * 40 + b"]" * 40, "nested too deeply"),
    (b'{"\\udfff": 1}', "key"),
    (b"{not json", "not valid JSON"),
])
def test_json_body_problem_names_the_problem(body, problem):
    found = json_body_problem(body, max_depth=32)
    assert (found is None) if problem is None else (problem in found)


# --- bodies ---

@pytest.mark.parametrize("body,status,message", [
    (b'{"text": "\\ud800"}', 400, "surrogate"),
    (b'{"text": "a\xed\xa0\x80b"}', 400, "UTF-8"),
    (b'{"text": "\\u200b\\ufeff\\u00ad"}', 422, "no visible characters"),
    (b'{"text": NaN}', 400, "NaN"),
    (b'{"text": ' + b"1" * 5000 + b"}", 400, "digits"),
    (b"[" * 5_000, 400, "nested too deeply"),
])
def test_hostile_bodies_get_a_4xx_that_says_why(open_server, body, status, message):
    r = open_server.post("/v1/echo", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]


def test_a_body_without_json_content_type_is_told_which_header_to_send(open_server):
    r = open_server.post("/v1/echo", content=b'{"text": "hi"}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(open_server):
    sent = {"bytes": 0}

    def stream():
        for _ in range(10_000):  # 100 MB if it were all read
            sent["bytes"] += 10_000
            yield b"x" * 10_000

    try:
        r = open_server.post("/v1/echo", content=stream(), headers={"content-type": "application/json"})
        assert r.status_code == 413
    except httpx.HTTPError:  # the server answered 413 and closed while we were still sending
        pass
    assert sent["bytes"] < 20_000_000
    assert open_server.get("/healthz").status_code == 200


# --- metrics, redirects, errors ---

def _metric(client, path, status) -> float:
    line = f'verticals_requests_total{{path="{path}",status="{status}"}} '
    return sum(float(x[len(line):]) for x in client.get("/metrics").text.splitlines() if x.startswith(line))


def test_metrics_count_5xx_and_label_by_route_template(open_server):
    before = _metric(open_server, "/v1/boom", 500)
    r = open_server.get("/v1/boom")
    assert r.status_code == 500 and r.json() == {"error": "internal error; the request was not processed"}
    assert _metric(open_server, "/v1/boom", 500) == before + 1
    open_server.delete("/v1/items/a/b/c")
    assert _metric(open_server, "/v1/items/{item_id:path}", 200) >= 1
    size = len(open_server.get("/metrics").text)
    for i in range(300):
        assert open_server.get(f"/random/{i}/{'x' * 50}").status_code == 404
    assert len(open_server.get("/metrics").text) < size + 200  # one "unmatched" series, not 300
    assert _metric(open_server, "unmatched", 404) >= 300


def test_trailing_slash_is_a_404_not_a_redirect_to_the_callers_host(open_server):
    r = open_server.post("/v1/echo/", json={"text": "hi"}, headers={"host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers


# --- slow and oversized clients ---

def test_partial_headers_are_cut_off_after_the_request_timeout(open_server):
    raw, seconds = raw_exchange(str(open_server.base_url), b"POST /v1/echo HTTP/1.1\r\nHost: x\r\n", wait=10)
    assert seconds < 5 and status_of(raw) in (408, None)


def test_a_trickled_body_gets_408(open_server):
    head = b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    raw, seconds = raw_exchange(str(open_server.base_url), head, wait=10, chunks=[b"{"] * 4, pause=0.4)
    assert seconds < 5 and status_of(raw) == 408


def test_a_huge_chunk_size_line_does_not_hang(open_server):
    head = (b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 10_000 + b"\r\n")
    raw, seconds = raw_exchange(str(open_server.base_url), head, wait=10)
    assert seconds < 5 and status_of(raw) in (400, 408, 413, None)


def test_headers_over_the_limit_get_431(open_server):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 5_000 + b"\r\n\r\n"
    raw, _ = raw_exchange(str(open_server.base_url), head, wait=5)
    assert status_of(raw) == 431


def test_idle_connections_are_closed(open_server):
    host, port = str(open_server.base_url).removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port))) for _ in range(50)]
    time.sleep(LIMITS.request_timeout_s + 1.0)
    for s in socks:
        s.settimeout(2)
        assert s.recv(10) == b""  # closed by the server
        s.close()
    assert open_server.get("/healthz").status_code == 200


# --- access ---

def test_with_a_token_only_health_and_bare_readiness_are_public(token_server):
    assert httpx.get(f"{token_server}/healthz").status_code == 200
    assert httpx.get(f"{token_server}/readyz").json() == {"status": "ready"}
    for path in ("/docs", "/openapi.json", "/metrics"):
        r = httpx.get(f"{token_server}{path}")
        assert r.status_code == 401 and "bearer token" in r.json()["error"]
    r = httpx.post(f"{token_server}/v1/echo", json={"text": "hi"}, headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    auth = {"authorization": "Bearer s3cret"}
    assert httpx.get(f"{token_server}/readyz", headers=auth).json() == {"status": "ready", "threshold": 0.42}
    assert httpx.get(f"{token_server}/metrics", headers=auth).status_code == 200
    assert httpx.post(f"{token_server}/v1/echo", json={"text": "hi"}, headers=auth).json() == {"text": "hi"}


def test_operators_can_open_docs_and_metrics():
    access = Access.from_settings("s3cret", "docs,metrics")
    assert access.is_public("/openapi.json") and access.is_public("/metrics") and not access.is_public("/v1/echo")
    with pytest.raises(Exception, match="unknown public endpoint group"):
        Access.from_settings("s3cret", "everything")
