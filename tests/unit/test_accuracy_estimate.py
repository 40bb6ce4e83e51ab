"""Accuracy estimated without labels (core.evaluation.accuracy_estimate): the ATC threshold and
estimate by hand and on simulated calibrated classifiers, DoC, the stored fit with the drift
baseline, old runs without it, and the drift report's alert."""

import json
import math

import numpy as np
import pytest

from core.evaluation.accuracy_estimate import (
    AccuracyFit,
    atc_estimate,
    atc_threshold,
    doc_estimate,
    estimate_accuracy,
    negative_entropy,
)
from core.evaluation.drift import DriftThresholds, drift_report
from core.evaluation.drift_baseline import BASELINE_META, DriftBaseline
from core.evaluation.drift_report import accuracy_lines

SCORES = np.arange(1, 11) / 10  # 0.1 .. 1.0


def test_the_threshold_leaves_the_validation_error_below_it():
    t = atc_threshold(SCORES, 0.7)  # 3 of 10 rows wrong: 3 rows fall below
    assert t == pytest.approx((0.3 + 0.4) / 2)
    assert atc_estimate(t, SCORES) == 0.7  # on its own validation data ATC returns the validation accuracy
    assert atc_estimate(atc_threshold(SCORES, 1.0), SCORES) == 1.0
    assert atc_estimate(atc_threshold(SCORES, 0.0), SCORES) == 0.0
    assert atc_estimate(t, [0.2, 0.3, 0.5, 0.9]) == 2 / 4
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        atc_threshold(SCORES, 1.2)


def test_doc_and_negative_entropy_by_hand():
    assert doc_estimate(0.8, 0.85, [0.75, 0.65]) == pytest.approx(0.8 - (0.85 - 0.7))
    assert doc_estimate(0.9, 0.5, [1.0]) == 1.0  # clipped
    ne = negative_entropy([[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(ne, [0.0, 2 * 0.5 * math.log(0.5)])


def _calibrated(rng, a: float, b: float, n: int = 20000):
    """A perfectly calibrated classifier: confidence ~ Beta(a, b) on [1/3, 1], correct ~ Bernoulli(confidence)."""
    conf = 1 / 3 + (2 / 3) * rng.beta(a, b, size=n)
    return conf, rng.random(n) < conf


def test_atc_is_exact_when_the_errors_look_like_validation_s():
    """Right rows score in [0.7, 1], wrong ones in [0.3, 0.6]: whatever the share of hard rows in new
    traffic (here 10% wrong on validation, 40% later), ATC counts exactly the right ones."""
    rng = np.random.default_rng(0)

    def traffic(n_right: int, n_wrong: int) -> np.ndarray:
        return np.concatenate([rng.uniform(0.7, 1.0, n_right), rng.uniform(0.3, 0.6, n_wrong)])

    fit = AccuracyFit.fit(traffic(900, 100), 0.9)
    assert 0.6 <= fit.threshold <= 0.7
    assert atc_estimate(fit.threshold, traffic(600, 400)) == 0.6
    assert atc_estimate(fit.threshold, traffic(300, 0)) == 1.0


def test_atc_and_doc_follow_a_calibrated_model_that_becomes_less_sure():
    rng = np.random.default_rng(0)
    val_conf, val_correct = _calibrated(rng, 5, 1)
    fit = AccuracyFit.fit(val_conf, float(val_correct.mean()))
    same_conf, same_correct = _calibrated(rng, 5, 1)
    assert abs(atc_estimate(fit.threshold, same_conf) - same_correct.mean()) < 0.01
    low_conf, low_correct = _calibrated(rng, 2, 2)  # less sure and, being calibrated, less accurate
    assert low_correct.mean() < same_correct.mean() - 0.15
    estimate = atc_estimate(fit.threshold, low_conf)
    assert estimate < atc_estimate(fit.threshold, same_conf) - 0.15  # ATC moves with the confidences...
    # ...but overshoots: every row under t counts as wrong, while a calibrated row at confidence 0.6 is
    # right 60% of the time. DoC (the average confidence's drop) is right on a calibrated model.
    assert estimate < low_correct.mean() - 0.2
    assert abs(doc_estimate(fit.validation_accuracy, fit.validation_mean_confidence, low_conf)
               - low_correct.mean()) < 0.02


def test_estimate_alerts_only_past_the_margin_and_says_when_not_available():
    fit = AccuracyFit.fit(SCORES, 0.7)  # t = 0.35
    ok = estimate_accuracy(fit, [0.4, 0.5, 0.9, 0.2], max_drop=0.05)  # 3 of 4 at or above: 0.75
    assert ok["estimate"] == 0.75 and ok["rows"] == 4 and ok["validation_accuracy"] == 0.7 and not ok["alert"]
    assert ok["method"] == "ATC (max_probability)" and ok["drop"] == pytest.approx(-0.05)
    low = estimate_accuracy(fit, [0.4, 0.1, 0.2, 0.3], max_drop=0.05)  # 1 of 4: 45 points down
    assert low["estimate"] == 0.25 and low["alert"] and low["drop"] == pytest.approx(0.45)
    assert not estimate_accuracy(fit, [0.4, 0.1, 0.2, 0.3], max_drop=0.5)["alert"]  # a wider margin
    missing = estimate_accuracy(None, [0.5], max_drop=0.05, note="old run")
    assert missing["estimate"] is None and missing["status"] == "not available: old run"


def _baseline(**changes):
    rng = np.random.default_rng(1)
    base = {"embeddings": rng.normal(size=(200, 4)).astype(np.float32),
                "confidence": np.linspace(0.3, 1.0, 200).astype(np.float32), "label_share": {"a": 0.5, "b": 0.5},
                "fallback_rate": None, "model_version": "v1", "n_validation": 200}
    return DriftBaseline(**(base | changes))


def test_the_fit_is_stored_with_the_baseline_and_loads_back(tmp_path):
    class Model:
        labels, temperature, ood = ["a", "b"], 1.0, None

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]])
    labels = np.array([0, 1, 1, 1])  # the third row is wrong: accuracy 3/4
    base = DriftBaseline.from_outputs(Model(), logits, np.zeros((4, 2)), model_version="r", labels=labels)
    assert base.accuracy.validation_accuracy == 0.75 and base.accuracy.n_validation == 4
    base.save(tmp_path)
    assert json.loads((tmp_path / BASELINE_META).read_text())["accuracy_estimate"]["threshold"] == base.accuracy.threshold
    assert DriftBaseline.load(tmp_path).accuracy == base.accuracy
    assert DriftBaseline.from_outputs(Model(), logits, np.zeros((4, 2)), model_version="r").accuracy is None


def test_an_old_run_is_refitted_from_its_report_or_says_not_available(tmp_path):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    _baseline().save(model)  # accuracy None: as a baseline saved before fits were stored
    meta = json.loads((model / BASELINE_META).read_text())
    del meta["accuracy_estimate"]
    (model / BASELINE_META).write_text(json.dumps(meta))
    lost = DriftBaseline.load(model)
    assert lost.accuracy is None and "holds no validation accuracy" in lost.accuracy_note
    section = drift_report(lost, embeddings=None, confidence=[0.5] * 50, labels={"a": 50}, fallback_rate=None)
    assert section["accuracy_estimate"]["estimate"] is None
    assert section["accuracy_estimate"]["status"].startswith("not available: the run was trained before")
    assert "not available" in "\n".join(accuracy_lines(section))
    (tmp_path / "run" / "report.json").write_text(json.dumps({"metrics": {"validation": {"accuracy": 0.8}}}))
    refitted = DriftBaseline.load(model).accuracy
    assert refitted.validation_accuracy == 0.8 and "refitted at load time" in refitted.fitted_from
    assert atc_estimate(refitted.threshold, lost.confidence) == pytest.approx(0.8, abs=1 / 200)


def test_the_drift_report_alerts_when_the_estimate_drops_past_the_margin():
    base = _baseline(accuracy=AccuracyFit.fit(np.linspace(0.3, 1.0, 200), 0.9))
    like = drift_report(base, embeddings=None, confidence=np.linspace(0.3, 1.0, 300), labels={"a": 150, "b": 150},
                        fallback_rate=None)
    assert like["accuracy_estimate"]["estimate"] == pytest.approx(0.9, abs=0.01)
    assert "accuracy_estimate" not in like["alerts"]
    unsure = np.linspace(0.3, 0.6, 300)  # far less sure: most rows under the threshold
    low = drift_report(base, embeddings=None, confidence=unsure, labels={"a": 150, "b": 150}, fallback_rate=None)
    assert low["accuracy_estimate"]["alert"] and "accuracy_estimate" in low["alerts"] and low["drifted"]
    assert "**alert:" in "\n".join(accuracy_lines(low))
    wide = drift_report(base, embeddings=None, confidence=unsure, labels={"a": 150, "b": 150}, fallback_rate=None,
                        thresholds=DriftThresholds(accuracy_drop=0.95))
    assert "accuracy_estimate" not in wide["alerts"]
