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
    feedback = client.post("/v1/feedback", json={"request_id": 5, "intent": "card"})
    assert feedback.status_code == 422
    assert feedback.json()["error"].endswith('send {"request_id": "...", "intent": "..."} or '
                                             '{"request_id": "...", "intents": ["...", ...]})')
    assert "/v1/route" not in feedback.json()["error"] and '"text"' not in feedback.json()["error"]


@pytest.mark.parametrize("intent", ["x\u0000y", "\u202elost_card", "a\u2028b", "lost\tcard", " lost_card", "\u200b"])
def test_feedback_refuses_label_names_that_are_not_identifiers(client, intent):
    request_id = client.post("/v1/route", json={"text": "my card was declined"}).json()["request_id"]
    single = client.post("/v1/feedback", json={"request_id": request_id, "intent": intent,
                                                "text": "my card was declined"})
    assert single.status_code == 422 and "intent" in single.json()["error"], single.text
    listed = client.post("/v1/feedback", json={"request_id": request_id, "intents": ["card", intent],
                                                "text": "my card was declined"})
    assert listed.status_code == 422, listed.text
    ok = client.post("/v1/feedback", json={"request_id": request_id, "intent": "lost_card",
                                            "text": "my card was declined"})
    assert ok.status_code == 200, ok.text  # one bad request never fails the next


def test_the_prediction_log_applies_the_same_label_rule(tmp_path):
    from core.foundation.errors import UserError
    from core.mlops.feedback import check_label

    assert check_label("lost_card") == "lost_card"
    for bad in ("x\u0000y", "\u202elost_card", "a\u2028b", ""):
        with pytest.raises(UserError):
            check_label(bad)
