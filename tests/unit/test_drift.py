"""core.evaluation.drift: pure metrics on hand-made arrays, the baseline file, the window, and the baseline a
tiny training run saves."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from core.evaluation.drift import (
    DriftThresholds,
    DriftWindow,
    domain_auc,
    drift_report,
    label_shift,
    mmd_rbf,
    psi,
)
from core.evaluation.drift_baseline import (
    BASELINE_FILE,
    BASELINE_META,
    DriftBaseline,
    load_drift_baseline,
)
from core.foundation.errors import UserError
from tests.conftest import CARD, TRANSFER, write_toy_splits

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- pure metrics

def test_psi_by_hand_and_its_limits():
    # 2 quantile bins of 0..9 split at 4.5: shares (0.5, 0.5) vs (3/4, 1/4)
    assert psi(np.arange(10), np.array([0, 0, 0, 9]), bins=2) == pytest.approx(
        (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5))
    x = RNG.beta(8, 1, 2000)
    assert psi(x, x) == 0.0
    assert psi(x, RNG.beta(8, 1, 200)) < 0.1  # same distribution: sampling noise only
    assert psi(x, RNG.beta(2, 2, 200)) > DriftThresholds().psi_confidence
    assert math.isfinite(psi(np.ones(50), np.zeros(5)))  # empty bins are floored, never infinite
    with pytest.raises(ValueError):
        psi(np.array([]), x)


def test_label_shift_is_total_variation():
    assert label_shift({"a": 0.5, "b": 0.5}, {"a": 3, "b": 1}) == pytest.approx(0.5 * (0.25 + 0.25))
    assert label_shift({"a": 0.5, "b": 0.5}, {"a": 7, "b": 7}) == 0.0
    assert label_shift({"a": 1.0}, {"new": 4}) == 1.0
    assert label_shift({"a": 0.5, "b": 0.5, "c": 0.0}, {"a": 1, "c": 1}) == pytest.approx(0.5 * (0 + 0.5 + 0.5))


def test_mmd_by_hand_and_on_samples():
    x, y = np.zeros((2, 1)), np.ones((2, 1))
    assert mmd_rbf(x, y, gamma=1.0) == pytest.approx(1 + 1 - 2 * math.exp(-1))
    a = RNG.normal(size=(400, 16))
    same, shifted = mmd_rbf(a, RNG.normal(size=(200, 16))), mmd_rbf(a, RNG.normal(size=(200, 16)) + 0.5)
    assert abs(same) < 0.01 and shifted > 10 * abs(same) and shifted > 0.05


def test_domain_auc_is_chance_for_one_distribution_and_high_for_a_shift():
    reference = RNG.normal(size=(1000, 32)).astype(np.float32)
    assert domain_auc(reference, RNG.normal(size=(200, 32))) == pytest.approx(0.5, abs=0.08)
    assert domain_auc(reference, RNG.normal(size=(200, 32)) + 0.5) > DriftThresholds().domain_auc
    with pytest.raises(ValueError, match="at least 5 rows"):
        domain_auc(reference, reference[:3])


# ---------------------------------------------------------------- baseline, report, window

def baseline(n=600, dim=16) -> DriftBaseline:
    conf = RNG.beta(8, 1, n).astype(np.float32)
    return DriftBaseline(embeddings=RNG.normal(size=(n, dim)).astype(np.float32), confidence=conf,
                         label_share={"card": 0.5, "transfer": 0.5}, fallback_rate=None, model_version="v1",
                         margin=conf - 0.3, out_of_scope=np.arange(n) % 20 == 0, out_of_scope_rate=0.05,
                         n_validation=n)


def test_report_on_traffic_like_the_baseline_raises_no_alert_and_shifted_traffic_raises_each():
    base = baseline()
    calm = drift_report(base, embeddings=RNG.normal(size=(300, 16)), confidence=RNG.beta(8, 1, 300),
                        labels=["card", "transfer"] * 150, fallback_rate=0.2, out_of_scope_rate=0.06)
    assert calm["alerts"] == [] and calm["drifted"] is False and calm["n"] == 300
    assert set(calm) >= {"n", "psi_confidence", "domain_auc", "mmd", "label_shift", "fallback_rate", "alerts",
                         "drifted"}
    assert calm["label_shift"] == 0.0 and abs(calm["domain_auc"] - 0.5) < 0.1
    shifted = drift_report(base, embeddings=RNG.normal(size=(300, 16)) + 1.0, confidence=RNG.beta(2, 2, 300),
                           labels={"card": 290, "refund": 10}, fallback_rate=0.6, out_of_scope_rate=0.4)
    assert shifted["alerts"] == ["psi_confidence", "domain_auc", "label_shift", "out_of_scope_rate"]
    assert shifted["drifted"] and shifted["fallback_rate_baseline"] is None  # no router rate in a saved baseline
    with_rate = replace(base, fallback_rate=base.fallback_rate_under(0.5, 0.1))
    assert "fallback_rate" in drift_report(with_rate, embeddings=None, confidence=[0.9] * 50, labels={"card": 50},
                                           fallback_rate=with_rate.fallback_rate + 0.2)["alerts"]
    no_emb = drift_report(base, embeddings=None, confidence=[0.9] * 50, labels={"card": 50}, fallback_rate=None)
    assert no_emb["domain_auc"] is None and no_emb["mmd"] is None
    with pytest.raises(UserError, match="baseline's own model"):
        drift_report(base, embeddings=np.zeros((30, 8)), confidence=[0.9] * 30, labels={"a": 30}, fallback_rate=0)


def test_fallback_rate_under_router_settings_by_hand():
    b = DriftBaseline(embeddings=np.zeros((4, 2), np.float32), confidence=np.array([0.9, 0.4, 0.8, 0.95], np.float32),
                      label_share={"a": 1.0}, fallback_rate=None, model_version="v",
                      margin=np.array([0.8, 0.1, 0.05, 0.9], np.float32), out_of_scope=np.array([0, 0, 0, 1], bool))
    assert b.fallback_rate_under(0.5, 0.1) == 3 / 4  # low confidence, ambiguous, out of scope
    assert b.fallback_rate_under(0.5, 0.1, use_out_of_scope=False) == 2 / 4
    assert b.fallback_rate_under(0.3, 0.01, use_out_of_scope=False) == 0.0


def test_baseline_round_trips_in_float16_and_old_runs_have_none(tmp_path):
    from safetensors.numpy import load_file

    base = baseline()
    base.save(tmp_path)
    assert load_file(str(tmp_path / BASELINE_FILE))["embeddings"].dtype == np.float16
    back = DriftBaseline.load(tmp_path)
    np.testing.assert_allclose(back.embeddings, base.embeddings, atol=1e-2)
    np.testing.assert_array_equal(back.confidence, base.confidence)
    np.testing.assert_array_equal(back.out_of_scope, base.out_of_scope)
    assert back.label_share == base.label_share and back.out_of_scope_rate == 0.05 and back.model_version == "v1"
    assert DriftBaseline.load(tmp_path / "missing") is None
    huge = replace(base, embeddings=base.embeddings * 1e6)  # past float16's range: kept in float32
    huge.save(tmp_path)
    assert np.isfinite(DriftBaseline.load(tmp_path).embeddings).all()
    (tmp_path / BASELINE_FILE).write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot be read"):
        DriftBaseline.load(tmp_path)


class FakeModel:
    labels, temperature, ood = ["a", "b", "c"], 2.0, None


def test_from_outputs_subsamples_with_the_seed_and_shares_come_from_every_row():
    logits = np.zeros((50, 3))
    logits[np.arange(50), np.arange(50) % 2] = 4.0  # 25 "a", 25 "b"
    emb = np.arange(50 * 4, dtype=np.float32).reshape(50, 4)
    one = DriftBaseline.from_outputs(FakeModel(), logits, emb, model_version="r", seed=3, max_rows=10)
    two = DriftBaseline.from_outputs(FakeModel(), logits, emb, model_version="r", seed=3, max_rows=10)
    assert len(one.confidence) == 10 and one.n_validation == 50
    np.testing.assert_array_equal(one.embeddings, two.embeddings)
    assert one.label_share == {"a": 0.5, "b": 0.5, "c": 0.0}
    top = math.exp(2.0) / (math.exp(2.0) + 2)  # softmax(logits / T) with T = 2
    np.testing.assert_allclose(one.confidence, top, rtol=1e-6)
    np.testing.assert_allclose(one.margin, top - 1 / (math.exp(2.0) + 2), rtol=1e-6)
    assert one.out_of_scope is None and one.out_of_scope_rate is None
    assert DriftBaseline.from_outputs(FakeModel(), np.zeros((0, 3)), np.zeros((0, 4)), model_version="r") is None


def test_window_reports_only_past_min_rows_and_keeps_the_latest_rows():
    base = baseline()
    window = DriftWindow("v1", size=100, min_rows=50)
    routes = [{"label": "card", "confidence": 0.9, "fallback_reason": None}] * 40
    window.add(RNG.normal(size=(40, 16)), routes)
    assert window.n == 40 and window.report(base) is None
    window.add(RNG.normal(size=(40, 16)), routes)
    later = [{"intent": "refund", "confidence": 0.3, "fallback_reason": "out_of_scope"}] * 100  # a router's own key
    window.add(RNG.normal(size=(100, 16)) + 1.0, later, label_key="intent")  # fills the ring: the card rows are gone
    report = window.report(base)
    assert window.n == 100 and report["n"] == 100 and report["label_shift"] == 1.0
    assert report["fallback_rate"] == 1.0 and report["out_of_scope_rate"] == 1.0
    assert {"psi_confidence", "domain_auc", "label_shift", "out_of_scope_rate"} <= set(report["alerts"])
    assert report["window_model_version"] == "v1"
    with pytest.raises(ValueError, match="do not match"):
        window.add(np.zeros((2, 16)), routes[:3])


# ---------------------------------------------------------------- saved by a training run

@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """A tiny-backbone probe run (no gradient steps: the fastest classification run)."""
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    folder = tmp_path_factory.mktemp("drift-data")
    write_toy_splits(folder)
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]  # the validation split
    cfg = load_recipe_file(RECIPES["support/intent-probe"], {"backbone": "tiny", "data": str(folder)})
    run = tmp_path_factory.mktemp("drift-run") / "probe-run"
    return run, run_recipe(cfg, run, progress=False), rows


def test_a_training_run_saves_its_validation_baseline(probe_run, tmp_path):
    import shutil

    from core.models.predictor import load_run

    run, report, rows = probe_run
    base = load_drift_baseline(run)
    assert base is not None and load_drift_baseline(run / "model").model_version == "probe-run"
    assert report["drift_baseline"]["rows"] == len(rows) == base.n_validation and base.embeddings.shape[0] == len(rows)
    model = load_run(run)
    logits, emb = model.predict_all([t for t, _ in rows])
    probs = model.predict_proba([t for t, _ in rows])
    np.testing.assert_allclose(base.confidence, probs.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(base.embeddings, emb, atol=2e-2)  # float16 on disk
    assert sum(base.label_share.values()) == pytest.approx(1.0) and set(base.label_share) == set(model.labels)
    assert base.out_of_scope_rate == pytest.approx(float(model.ood.is_out_of_scope(logits, emb, model.temperature).mean()))
    meta = json.loads((run / "model" / BASELINE_META).read_text())
    assert meta["fallback_rate"] is None and meta["rows"] == len(rows)
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    (old / "model" / BASELINE_META).unlink()  # a run from before baselines
    (old / "model" / BASELINE_FILE).unlink()
    assert load_drift_baseline(old) is None
    same = drift_report(base, embeddings=emb, confidence=probs.max(axis=1), labels=[model.labels[i] for i in
                        probs.argmax(axis=1)], fallback_rate=None, thresholds=DriftThresholds(min_embedding_rows=5))
    assert same["psi_confidence"] == pytest.approx(0.0, abs=1e-6) and same["label_shift"] == pytest.approx(0.0)
