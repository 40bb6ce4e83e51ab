"""Multi-label data at the door: the label-name rule, the reader, every refused input, the pure metrics."""

import json

import numpy as np
import pytest

from core.confidence.multilabel import choose_thresholds, fit_sigmoid_temperature, sigmoid
from core.data.multilabel import MAX_LABELS_PER_ROW, load_multilabel, multi_hot, parse_label_list
from core.evaluation.multilabel import (
    exact_set_accuracy,
    label_ece,
    macro_f1,
    micro_f1,
    per_label_prf,
    top1_accuracy,
)
from core.foundation.errors import UserError
from core.foundation.labels import MAX_LABEL_NAME_CHARS, check_label_name, label_name_problem
from tests.conftest import write_csv
from tests.support.multilabel_helpers import write_multilabel_splits


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("   ", "empty"), ("a\x00b", "NUL"), ("pay\u202emoc", "bidi"), ("a\u2066b", "bidi"),
    ("a\u200fb", "bidi"), ("a\u2028b", "separator"), ("a\u2029b", "separator"), ("a\nb", "control"),
    ("a\tb", "control"), ("a\x1bb", "control"), ("a\x85b", "control"), ("x" * (MAX_LABEL_NAME_CHARS + 1), "characters"),
    (" card", "leading"), ("\u200b", "visible"), ("\ud800", "surrogate"), (7, "string")])
def test_the_label_rule_refuses_bad_names(name, why):
    assert why in label_name_problem(name)
    with pytest.raises(UserError, match="feedback"):
        check_label_name(name, "feedback")


@pytest.mark.parametrize("name", ["card_arrival", "Karte verloren", "退款", "a-b.c", "x" * MAX_LABEL_NAME_CHARS])
def test_the_label_rule_accepts_identifiers(name):
    assert label_name_problem(name) is None and check_label_name(name) == name


def test_csv_and_jsonl_rows_carry_several_labels_and_the_summary_counts_them(tmp_path):
    data = load_multilabel(str(write_multilabel_splits(tmp_path)))
    assert data.labels == ["card", "transfer"]
    assert data.summary()["multi_label_rows"] == {"train": 18, "validation": 12, "test": 6}
    assert ("card", "transfer") in data.train.label_sets
    path = tmp_path / "rows.jsonl"
    rows = [{"text": f"t{i}", "labels": ["a", "b"] if i % 3 == 0 else ["a" if i % 2 else "b"]} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    own = load_multilabel(str(path))
    assert own.labels == ["a", "b"] and len(own.train) + len(own.validation) + len(own.test) == 40
    assert sum(s.multi_label_rows() for s in (own.train, own.validation, own.test)) == 14


def test_single_label_data_reads_as_one_label_per_row(toy_dir):
    data = load_multilabel(str(toy_dir))
    assert data.labels == ["card", "transfer"] and all(len(s) == 1 for s in data.train.label_sets)
    assert data.summary()["multi_label_rows"]["train"] == 0
    assert multi_hot([("transfer",), ("card", "transfer")], data.labels).tolist() == [[0, 1], [1, 1]]


@pytest.mark.parametrize("cell, message", [
    ("", "empty label list"), ("a|a", "more than once"), ("|".join(f"l{i}" for i in range(10_000)), "at most"),
    ("a|\u202eb", "bidi"), ("a|", "empty"), ("a|b\x00", "NUL")])
def test_bad_label_lists_in_a_csv_are_refused_with_the_row(tmp_path, cell, message):
    path = write_csv(tmp_path / "bad.csv", [("fine text", "a|b"), ("other text", cell)], header=("text", "labels"))
    with pytest.raises(UserError, match=message) as err:
        load_multilabel(str(path))
    assert "row 3" in str(err.value)


@pytest.mark.parametrize("value, message", [([], "empty label list"), (["a", "a"], "more than once"),
                                            ([f"l{i}" for i in range(10_000)], "10000 labels"), ([1], "string"),
                                            ({"a": 1}, "list of label names")])
def test_bad_label_lists_in_jsonl_are_refused(tmp_path, value, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "x", "labels": ["a"]}) + "\n" + json.dumps({"text": "y", "labels": value}))
    with pytest.raises(UserError, match=message):
        load_multilabel(str(path))


def test_a_labels_column_mixed_with_a_label_column_is_refused(tmp_path):
    path = write_csv(tmp_path / "mixed.csv", [("t", "a|b", "a")], header=("text", "labels", "label"))
    with pytest.raises(UserError, match="both a 'labels' and a 'label' column"):
        load_multilabel(str(path))
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(json.dumps({"text": "x", "labels": ["a"]}) + "\n" + json.dumps({"text": "y", "label": "b", "labels": ["a"]}))
    with pytest.raises(UserError, match="both"):
        load_multilabel(str(jsonl))


def test_unknown_labels_in_validation_or_test_are_refused(tmp_path):
    write_multilabel_splits(tmp_path)
    write_csv(tmp_path / "test.csv", [("x", "card|refund")], header=("text", "labels"))
    with pytest.raises(UserError, match="test split has unknown labels.*'refund'"):
        load_multilabel(str(tmp_path))
    with pytest.raises(UserError, match="not one the model knows"):
        multi_hot([("nope",)], ["card"])


def test_single_label_files_meet_the_label_rule_too(tmp_path):
    from core.data.catalog import load_classification

    path = write_csv(tmp_path / "single.csv", [("t", "a")] * 5 + [("u", "b\u202e")] * 5)
    with pytest.raises(UserError, match="bidi"):
        load_classification(str(path))


def test_max_labels_per_row_is_the_limit():
    assert len(parse_label_list("|".join(f"l{i}" for i in range(MAX_LABELS_PER_ROW)), "row")) == MAX_LABELS_PER_ROW
    with pytest.raises(UserError, match=f"at most {MAX_LABELS_PER_ROW}"):
        parse_label_list([f"l{i}" for i in range(MAX_LABELS_PER_ROW + 1)], "row")


# ---------------------------------------------------------------- pure metrics, by hand

TRUE = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
PRED = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]])


def test_multilabel_metrics_by_hand():
    assert exact_set_accuracy(TRUE, PRED) == 2 / 4
    # pooled: tp 4 (r0 a, r1 a, r2 c, r3 b), 5 true and 5 predicted entries
    assert micro_f1(TRUE, PRED) == pytest.approx(2 * 4 / (5 + 5))
    precision, recall, f1, support = per_label_prf(TRUE, PRED)
    assert precision.tolist() == pytest.approx([2 / 3, 1.0, 1.0]) and recall.tolist() == pytest.approx([1.0, 1 / 2, 1.0])
    assert f1.tolist() == pytest.approx([0.8, 2 / 3, 1.0]) and support.tolist() == [2, 2, 1]
    assert macro_f1(TRUE, PRED) == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)
    assert exact_set_accuracy(TRUE, TRUE) == micro_f1(TRUE, TRUE) == macro_f1(TRUE, TRUE) == 1.0
    assert micro_f1(TRUE, np.zeros_like(TRUE)) == 0.0
    assert top1_accuracy(TRUE, np.array([[.9, .1, 0], [0, .8, 0], [.5, 0, .1], [0, .2, .9]])) == 2 / 4


def test_label_ece_by_hand():
    # one bin holds 0.9, 0.9 with targets 1, 0: |0.5 - 0.9| = 0.4, weight 2/4; 0.1, 0.1 with 0, 0: 0.1, weight 2/4
    assert label_ece([[0.9, 0.1], [0.9, 0.1]], [[1, 0], [0, 0]]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert label_ece([[1.0, 0.0]], [[1, 0]]) == 0.0


def test_thresholds_come_from_the_validation_scores():
    probs = np.array([[0.9, 0.3], [0.7, 0.2], [0.2, 0.35], [0.1, 0.1]])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    t = choose_thresholds(probs, y)
    assert 0.2 < t[0] <= 0.7 and 0.3 < t[1] <= 0.35  # label 1 needs a low threshold to catch its one positive
    assert choose_thresholds(probs, np.zeros_like(y)).tolist() == [0.5, 0.5]  # no positives: the default


def test_sigmoid_temperature_sharpens_underconfident_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(400, 3))
    logits = np.where(y == 1, 1.0, -1.0) * 0.5  # always right, but timid
    t, note = fit_sigmoid_temperature(logits, y)
    assert t < 1 and note.startswith("temperature stopped") or t < 0.5
    assert sigmoid(np.array([0.0]))[0] == 0.5
    assert fit_sigmoid_temperature(logits[:5], y[:5]) [0] == 1.0
