import numpy as np
import pytest

from core.evaluation.metrics import accuracy, classification_metrics, confusion, macro_f1, per_class_report


def test_accuracy_by_hand():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(3 / 4)
    assert accuracy([1, 1], [1, 1]) == 1.0
    assert accuracy([0, 0], [1, 1]) == 0.0


def test_macro_f1_by_hand():
    # class 0: p=1, r=1/2 -> f1=2/3; class 1: p=1/2, r=1 -> f1=2/3
    assert macro_f1([0, 0, 1], [0, 1, 1]) == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_macro_f1_equals_scikit_learns_over_the_classes_in_either_vector():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        y_true, y_pred = rng.integers(0, k, n), rng.integers(0, k + 2, n)  # predicted classes never true, too
        assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert macro_f1(["card", "fee"], ["card", "refund"]) == pytest.approx((1 + 0 + 0) / 3)  # label strings (gate.py)
    assert macro_f1([], []) == 0.0  # as accuracy
    with pytest.raises(ValueError, match="one length"):
        macro_f1([0, 1], [0])


def test_validation_metrics_leave_scikit_learn_unimported():
    # every validation pass of a fit computes them; importing scikit-learn cost a fit 1.6 s
    import subprocess
    import sys

    code = ("import sys; from core.evaluation.metrics import classification_metrics; "
            "classification_metrics([0, 1, 1], [0, 1, 0]); print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_confusion_counts_true_rows_predicted_columns():
    m = confusion([0, 0, 1, 2], [0, 1, 1, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_per_class_report_and_metric_keys():
    rep = per_class_report([0, 0, 1], [0, 1, 1], ["a", "b"])
    assert rep["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert set(classification_metrics(np.array([0]), np.array([0]))) == {"accuracy", "macro_f1"}


def test_labelled_metrics_adds_details_only_when_asked():
    import numpy as np

    from core.evaluation.metrics import labelled_metrics

    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    plain = labelled_metrics(y_true, y_pred, ["a", "b"])
    assert plain["n"] == 4 and plain["accuracy"] == 3 / 4 and "per_class" not in plain
    full = labelled_metrics(y_true, y_pred, ["a", "b"], details=True)
    assert full["confusion_matrix"] == [[1, 1], [0, 2]] and set(full["per_class"]) >= {"a", "b"}
