"""Request ids, model versions, the prediction log and POST /v1/feedback of the intent service."""

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.mlops.feedback import PredictionLog
from core.serving.app import ServiceLimits
from solutions.support.deployment import ServedModel, load_baseline, model_version
from solutions.support.router import IntentRouter
from solutions.support.service import create_app

AUTH = {"Authorization": "Bearer s3cret"}
LIMITS = ServiceLimits(max_chars=200, max_batch=8, max_body_bytes=20_000)


@pytest.fixture(scope="module")
def router(served_run):
    return IntentRouter.from_run(served_run)


def _app(router, run, prediction_log):
    served = ServedModel(router, model_version(run), load_baseline(run, router.settings), str(run))
    return create_app(served, token="s3cret", limits=LIMITS, prediction_log=prediction_log)


@pytest.fixture
def hashed(router, served_run, tmp_path):
    """A client of the service logging text hashes only (the default), and its log."""
    with PredictionLog(tmp_path / "predictions.db") as prediction_log:
        with TestClient(_app(router, served_run, prediction_log), headers=AUTH) as client:
            yield client, prediction_log


def test_every_route_has_a_logged_request_id_and_the_model_version(hashed, served_run):
    client, prediction_log = hashed
    one = client.post("/v1/route", json={"text": "my card was declined"}).json()
    many = client.post("/v1/route", json={"texts": ["transfer to another bank", "card declined"]}).json()["routes"]
    rows = [one, *many]
    version = model_version(served_run)
    assert version.startswith("run-") and len(version) == len("run-") + 8
    assert all(r["model_version"] == version and len(r["request_id"]) == 32 for r in rows)
    assert len({r["request_id"] for r in rows}) == 3
    assert prediction_log.counts() == {"predictions": 3, "feedback": 0}  # the warm-up call is not logged
    stats = prediction_log.window_stats(model_version=version)
    assert stats["n"] == 3 and stats["labels"] == {"card": 2, "transfer": 1}
    assert client.get("/readyz").json()["model_version"] == version


def test_feedback_needs_the_routed_text_when_only_its_hash_is_kept(hashed):
    client, prediction_log = hashed
    text = "my card was declined"
    request_id = client.post("/v1/route", json={"text": text}).json()["request_id"]
    missing = client.post("/v1/feedback", json={"request_id": request_id, "intent": "lost_card"})
    assert missing.status_code == 422 and "send the request's text" in missing.json()["error"]
    other = client.post("/v1/feedback", json={"request_id": request_id, "intent": "lost_card", "text": "another text"})
    assert other.status_code == 422 and "not the text that was routed" in other.json()["error"]
    ok = client.post("/v1/feedback", json={"request_id": request_id, "intent": "lost_card", "text": text})
    assert ok.status_code == 200, ok.text
    assert ok.json()["label"] == "lost_card" and ok.json()["predicted_label"] == "card"
    again = client.post("/v1/feedback", json={"request_id": request_id, "intent": "out_of_scope"})
    assert again.status_code == 200  # the text came with the first feedback: latest label wins
    [example] = prediction_log.labelled()
    assert (example.id, example.text, example.label) == (request_id, text, "out_of_scope")


@pytest.mark.parametrize("body,status,message", [
    ({"request_id": "0" * 32, "intent": "card", "text": "x"}, 404, "unknown request_id"),
    ({"request_id": "not an id!", "intent": "card"}, 422, "not an id"),
    ({"request_id": "a" * 300, "intent": "card"}, 422, "at most"),
    ({"request_id": "abc", "intent": "x" * 300}, 422, "at most 256"),
    ({"request_id": "abc", "intent": "  "}, 422, "intent"),
    ({"request_id": "abc", "intent": "two\nlines"}, 422, "line break"),
    ({"request_id": "abc", "intent": 7}, 422, "intent"),
    ({"request_id": "abc"}, 422, "intent"),
    ({"request_id": "abc", "intent": "card", "label": "card"}, 422, "label"),
    ({"request_id": "abc", "intent": "card", "text": "x" * 201}, 413, "at most 200"),
    ([1, 2], 422, "body"),
])
def test_bad_feedback_gets_a_4xx_naming_the_problem(hashed, body, status, message):
    client, _ = hashed
    reply = client.post("/v1/feedback", json=body)
    assert reply.status_code == status and message in reply.json()["error"], reply.text


def test_feedback_is_authenticated_and_hostile_bodies_are_refused(hashed):
    client, prediction_log = hashed
    request_id = client.post("/v1/route", json={"text": "card declined"}).json()["request_id"]
    anonymous = TestClient(client.app).post("/v1/feedback", json={"request_id": request_id, "intent": "card"})
    assert anonymous.status_code == 401
    for raw in (b"{not json", b'{"request_id": "\\ud800", "intent": "card"}', b"[" * 100 + b"]" * 100,
                b'{"request_id": NaN, "intent": "card"}'):
        reply = client.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})
        assert 400 <= reply.status_code < 500, (raw[:30], reply.status_code)
    assert prediction_log.counts()["feedback"] == 0


def test_with_texts_logged_feedback_needs_no_text(router, served_run, tmp_path):
    with PredictionLog(tmp_path / "with-text.db", store_text=True) as prediction_log, \
            TestClient(_app(router, served_run, prediction_log), headers=AUTH) as client:
        request_id = client.post("/v1/route", json={"text": "transfer fee in euros"}).json()["request_id"]
        assert client.post("/v1/feedback", json={"request_id": request_id, "intent": "fees"}).status_code == 200
        assert [(e.text, e.label) for e in prediction_log.labelled()] == [("transfer fee in euros", "fees")]


def test_a_failing_log_never_fails_a_request(router, served_run, tmp_path, caplog):
    prediction_log = PredictionLog(tmp_path / "closed.db")
    with TestClient(_app(router, served_run, prediction_log), headers=AUTH) as client:
        prediction_log.close()  # every write now raises sqlite3.ProgrammingError
        reply = client.post("/v1/route", json={"texts": ["card declined", "transfer abroad"]})
        assert reply.status_code == 200
        assert all(len(r["request_id"]) == 32 for r in reply.json()["routes"])
        assert "verticals_prediction_log_failures_total 1.0" in client.get("/metrics").text
    assert "could not log 2 routed texts" in caplog.text


def test_without_a_log_there_is_no_feedback_endpoint(router, served_run):
    with TestClient(_app(router, served_run, None), headers=AUTH) as client:
        assert client.post("/v1/route", json={"text": "card declined"}).json()["request_id"]
        assert client.post("/v1/feedback", json={"request_id": "abc", "intent": "card"}).status_code == 404


HOSTILE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    | st.sampled_from(["\ud800", "\x00", "\u200b", "a" * 300, "", " ", "0" * 32]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["request_id", "intent", "text", "x"]), children, max_size=4),
    max_leaves=10)


@pytest.fixture(scope="module")
def fuzzed(router, served_run, tmp_path_factory):
    with PredictionLog(tmp_path_factory.mktemp("fuzz") / "p.db") as prediction_log:
        with TestClient(_app(router, served_run, prediction_log), headers=AUTH) as client:
            yield client


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=HOSTILE)
def test_fuzzed_feedback_never_gets_a_5xx(fuzzed, body):
    import json

    payload = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    reply = fuzzed.post("/v1/feedback", content=payload, headers={"content-type": "application/json"})
    assert 400 <= reply.status_code < 500 and "error" in reply.json(), reply.text
