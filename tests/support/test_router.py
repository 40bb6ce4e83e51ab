import numpy as np
import pytest

from core.foundation.errors import UserError
from solutions.support.router import IntentRouter, RouterSettings, RoutingTable, fallback_reason


def test_fallback_reasons_in_order():
    s = RouterSettings(min_confidence=0.5, min_margin=0.1)
    assert fallback_reason(np.array([0.9, 0.1]), 0.9, 0.5, s) is None
    assert fallback_reason(np.array([0.9, 0.1]), 0.4, 0.5, s) == "out_of_scope"
    assert fallback_reason(np.array([0.4, 0.3, 0.3]), 0.9, 0.5, s) == "low_confidence"
    assert fallback_reason(np.array([0.52, 0.48]), 0.9, 0.5, s) == "ambiguous"
    off = RouterSettings(use_out_of_scope=False)
    assert fallback_reason(np.array([0.9, 0.1]), 0.1, 0.5, off) is None


def test_routing_table_yaml(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("default_queue: tier1\nfallback_queue: humans\nroutes:\n"
                    "  card: {queue: cards, priority: high, reply: We are on it}\n  transfer: payments\n")
    table = RoutingTable.from_yaml(path, ["card", "transfer", "other"])
    assert table.route_for("card").priority == "high" and table.route_for("transfer").queue == "payments"
    assert table.route_for("other").queue == "tier1" and table.fallback_queue == "humans"


def test_routing_table_rejects_unknown_intents(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  refunds: {queue: money}\n")
    with pytest.raises(UserError, match="intent 'refunds' is not one the model predicts"):
        RoutingTable.from_yaml(path, ["card", "transfer"])


def test_router_routes_known_intents_and_hands_over_the_rest(support_run, tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  card: {queue: cards, reply: Checking your card}\n  transfer: {queue: payments}\n")
    router = IntentRouter.from_run(support_run, path)
    card = router.route("my card was declined")
    assert card["intent"] == "card" and card["queue"] == "cards" and not card["handover"]
    assert card["reply"] == "Checking your card" and card["top_k"][0]["intent"] == "card"
    assert 0.5 <= card["confidence"] <= 1
    strict = IntentRouter(router.model, router.table, RouterSettings(min_confidence=1.01))  # above any probability
    low = strict.route("my card was declined")
    assert low["handover"] and low["fallback_reason"] == "low_confidence" and low["queue"] == "human"


def test_out_of_scope_scorer_separates_gibberish(support_run):
    router = IntentRouter.from_run(support_run)
    routes = router.route_batch(["zzqx vvvv kkkk ppp", "my card was declined", "transfer to another bank"])
    assert routes[0]["in_scope_score"] < min(routes[1]["in_scope_score"], routes[2]["in_scope_score"])


def test_onnx_export_routes_like_torch_and_int8_stays_close(support_run, tmp_path):
    import shutil

    from core.export.onnx import INT8_FILE, export_onnx, onnx_size, quantize_int8
    from core.models.classifier import load_classifier

    run = tmp_path / "run"
    shutil.copytree(support_run, run)
    with pytest.raises(UserError, match="export onnx"):
        IntentRouter.from_run(run, runtime="onnx-int8")
    onnx_file = export_onnx(load_classifier(run / "model"), run / "model" / "model.onnx")
    weights = run / "model" / "model.onnx.data"  # the dynamo exporter keeps the weights beside the graph
    assert onnx_size(onnx_file) == onnx_file.stat().st_size + weights.stat().st_size
    texts = ["my card was declined", "a much longer message about a transfer to another bank account", "zzz"]
    torch_routes = IntentRouter.from_run(run).route_batch(texts)
    onnx_routes = IntentRouter.from_run(run, runtime="onnx").route_batch(texts)
    for a, b in zip(torch_routes, onnx_routes):
        assert a["intent"] == b["intent"] and a["fallback_reason"] == b["fallback_reason"]
        assert abs(a["confidence"] - b["confidence"]) < 1e-3
        assert abs(a["in_scope_score"] - b["in_scope_score"]) < 1e-3
    int8_file = quantize_int8(onnx_file, run / "model" / INT8_FILE)
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_file)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops  # the matmuls run in int8
    int8_routes = IntentRouter.from_run(run, runtime="onnx-int8", threads=1).route_batch(texts)
    for a, b in zip(onnx_routes, int8_routes):  # quantisation moves probabilities a little, not a lot
        assert abs(a["confidence"] - b["confidence"]) < 0.05
