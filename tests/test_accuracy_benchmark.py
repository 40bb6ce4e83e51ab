"""benchmarks/accuracy_estimate.py's pure parts: the time-order proxy and the target count."""

from __future__ import annotations

from benchmarks.accuracy_estimate import SHIFTS, summarise, time_halves


def test_time_halves_split_each_intent_in_file_order():
    rows = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("a4", "a"), ("b2", "b")]
    first, second = time_halves(rows)
    assert first == [("a1", "a"), ("a2", "a"), ("b1", "b")]
    assert second == [("a3", "a"), ("a4", "a"), ("b2", "b")]


def test_the_target_counts_shifts_within_three_points():
    def run(true, estimate):
        return {"rows": 10, "validation_accuracy": 0.9, "true_accuracy": true, "atc_max_probability": estimate,
                "atc_negative_entropy": estimate, "doc": true, **{f"error_{m}": abs(estimate - true) for m in
                                                                 ("atc_max_probability", "atc_negative_entropy")},
                "error_doc": 0.0}

    errors = [0.01, 0.029, 0.0, 0.2, 0.031]  # 3 of 5 within 3 points
    summary = summarise({shift: [run(0.8, 0.8 + e)] for shift, e in zip(SHIFTS, errors)})
    assert summary["within_3_points"] == {"atc_max_probability": 3, "atc_negative_entropy": 3, "doc": 5}
    assert not summary["target_met"]
