"""The intent service's error answers: one shape ({"error"}) for every status, also the router's own
404/405, and a hint in each 422 that names the request shape of the route that was called."""

import pytest
from fastapi.testclient import TestClient

from core.mlops.feedback import PredictionLog
from tests.support.test_feedback_service import AUTH, _app


@pytest.fixture
def client(served_run, tmp_path):
    from solutions.support.router import IntentRouter

    with PredictionLog(tmp_path / "predictions.db") as prediction_log:
        with TestClient(_app(IntentRouter.from_run(served_run), served_run, prediction_log), headers=AUTH) as c:
            yield c


def test_405_and_404_answer_with_error_like_every_other_status(client):
    wrong_method = client.get("/v1/route")
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}
    missing = client.post("/v1/nowhere", json={})
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


def test_each_route_hints_its_own_request_shape(client):
    route = client.post("/v1/route", json={"txt": "hello"})
    assert route.status_code == 422 and route.json()["error"].endswith('send {"text": "..."} or {"texts": ["...", ...]})')
    feedback = client.post("/v1/feedback", json={"request_id": "x"})
    assert feedback.status_code == 422
    assert feedback.json()["error"].endswith('send {"request_id": "...", "intent": "..."})')
    assert "/v1/route" not in feedback.json()["error"] and '"text"' not in feedback.json()["error"]
