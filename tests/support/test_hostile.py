"""The intent-routing service under hostile input, over real HTTP with the tiny trained model:
poison in a micro-batch, property-based text fuzzing (hypothesis) and schema-driven fuzzing
(schemathesis). Every case asserts no 5xx, and the service answers the same afterwards."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.foundation.errors import UserError
from core.serving.app import ServiceLimits
from solutions.support.service import MicroBatcher, create_app
from tests.http_helpers import running

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = ServiceLimits(max_chars=300, max_batch=8, max_body_bytes=50_000)
SCHEMA = schemathesis.openapi.from_dict(create_app(lambda texts: [{} for _ in texts], token=TOKEN).openapi())
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def routed(response) -> dict:
    """The route in a response, without its request id (new for every request)."""
    return {k: v for k, v in response.json().items() if k != "request_id"}


@pytest.fixture(scope="module")
def live(support_run):
    from solutions.support.router import IntentRouter

    router = IntentRouter.from_run(support_run)
    with running(create_app(router.route_batch, info=router.describe(), token=TOKEN, limits=LIMITS), LIMITS) as base:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            reference = routed(client.post("/v1/route", json={"text": "my card was declined"}))
            yield client, reference
            after = client.post("/v1/route", json={"text": "my card was declined"})
            assert after.status_code == 200 and routed(after) == reference, "the service changed under fuzzing"


def test_one_poisoned_request_never_fails_the_others_in_its_batch():
    def route_batch(texts):
        if any("poison" in t for t in texts):
            raise ValueError("the tokenizer choked")
        return [t.upper() for t in texts]

    async def scenario():
        batcher = MicroBatcher(route_batch, max_batch=64)
        batcher.start()
        jobs = [batcher.submit([f"text {i}"] if i % 7 else ["poison"]) for i in range(60)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        if i % 7:
            assert result == [f"TEXT {i}"]
        else:
            assert isinstance(result, ValueError)


def test_a_lone_request_that_fails_is_not_run_twice():
    calls = []

    def route_batch(texts):
        calls.append(list(texts))
        raise ValueError("broken")

    async def scenario():
        batcher = MicroBatcher(route_batch, max_batch=64)
        batcher.start()
        result = await asyncio.gather(batcher.submit(["only one"]), return_exceptions=True)
        await batcher.stop()
        return result

    assert isinstance(asyncio.run(scenario())[0], ValueError) and calls == [["only one"]]


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_parallel_batches_run_at_once_and_a_poisoned_one_still_fails_alone(parallel):
    """With `parallel` slots, that many merged batches are in flight together (each call waits until
    `parallel` calls are inside at once, which a one-at-a-time batcher never reaches and would time
    out on); poison in one batch still fails only its own request, and every other request gets its own answer."""
    calls, inside, peak, lock = [0], [0], [0], threading.Lock()
    gate = threading.Barrier(parallel, timeout=5)

    def route_batch(texts):
        with lock:
            first, calls[0] = calls[0] < parallel, calls[0] + 1
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            if first:
                gate.wait()  # the first `parallel` calls meet here: only possible if they overlap
            if "poison" in texts:
                raise ValueError("poisoned")
            time.sleep(0.002)
            return [t.upper() for t in texts]
        finally:
            with lock:
                inside[0] -= 1

    async def scenario():
        batcher = MicroBatcher(route_batch, max_batch=4, parallel=parallel)
        batcher.start()
        jobs = [batcher.submit([f"text {i}"] if i % 9 else ["poison"]) for i in range(1, 80)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert peak[0] == parallel
    for i, result in zip(range(1, 80), results):
        assert isinstance(result, ValueError) if i % 9 == 0 else result == [f"TEXT {i}"]


def test_parallel_batches_below_one_are_refused():
    with pytest.raises(UserError, match="at least 1"):
        MicroBatcher(lambda texts: texts, max_batch=4, parallel=0)


def test_surrogates_sent_beside_valid_requests_fail_alone(live):
    client, reference = live
    bodies = [b'{"text": "my card was declined"}'] * 120 + [b'{"text": "\\ud800 card"}', b'{"text": "\xed\xa0\x80"}'] * 20

    def post(body):
        return client.post("/v1/route", content=body, headers={"content-type": "application/json"})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, bodies))
    good = [r for r, b in zip(responses, bodies) if b == bodies[0]]
    bad = [r for r, b in zip(responses, bodies) if b != bodies[0]]
    assert all(r.status_code == 200 and routed(r) == reference for r in good)
    assert all(r.status_code == 400 for r in bad)


HOSTILE_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec=None, categories=("Cs", "Cf", "Cc", "Zs")), max_size=20),
    st.sampled_from(["\ud800", "\udfff card", "\x00", "\u200b\ufeff\u00ad", "a" * 301, "", " "]),
)
HOSTILE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["text", "texts", "x"]), children, max_size=3),
    max_leaves=12,
)


@FUZZ
@given(body=st.one_of(
    st.builds(lambda t: {"text": t}, HOSTILE_TEXT),
    st.builds(lambda ts: {"texts": ts}, st.lists(HOSTILE_TEXT, max_size=10)),
    HOSTILE_JSON,
))
def test_fuzzed_json_never_gets_a_5xx(live, body):
    import json

    client, _ = live
    payload = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    r = client.post("/v1/route", content=payload, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or "error" in r.json()


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.builds(lambda n: b"[" * n, st.integers(1, 20_000)),
                     st.builds(lambda n: b'{"text": ' + b"7" * n + b"}", st.integers(1, 6_000))))
def test_fuzzed_bytes_never_get_a_5xx(live, raw):
    client, _ = live
    r = client.post("/v1/route", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


@SCHEMA.parametrize()
@FUZZ
def test_schema_driven_fuzzing_finds_no_5xx(live, case):
    client, _ = live
    response = case.call(base_url=str(client.base_url), headers=AUTH)
    assert response.status_code < 500, response.text
