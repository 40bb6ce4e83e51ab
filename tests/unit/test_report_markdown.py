"""report.md rendering (core.runs.markdown with core.classify.report's sections) and the split / row count
the plot titles name. The item encoder's report.md: tests/recsys/test_report.py."""

import numpy as np
import pytest

from core.classify.report import most_confused_pairs, render_report

LABELS = ["card_lost", "refund", "transfer"]
# true rows: card_lost 10, refund 10, transfer 10 (30 test rows)
MATRIX = [[8, 2, 0],
          [3, 5, 2],
          [0, 1, 9]]


def classification_report() -> dict:
    return {
        "config": {"name": "support/intent-lora", "description": "Intents with LoRA.", "task": "classification",
                   "mode": "finetune", "data": {"source": "clinc_like", "oos_label": "oos"},
                   "model": {"backbone": "minilm", "peft": "lora", "lora_r": 8, "lora_alpha": 16}},
        "finished_at": "2026-12-02T01:00:00+00:00",
        "data": {"name": "clinc_like", "num_labels": 3, "train": 1200, "validation": 100, "test": 30,
                 "oos_validation": 20, "oos_test": 25, "train_used": 300,
                 "out_of_scope_rows_set_aside": {"train": 40, "validation": 20, "test": 25}},
        "data_card": {"name": "clinc_like", "license": "CC BY 3.0", "citation": "Larson et al. (2019)\n", "url": None},
        "metrics": {"validation": {"n": 100, "accuracy": 0.8, "macro_f1": 0.75},
                    "test": {"n": 30, "accuracy": 22 / 30, "macro_f1": 0.7}},
        "skipped_evaluations": {},
        "confidence": {"temperature": 1.5, "temperature_fitted_on": 100, "ood_scorer": "energy",
                       "ood_threshold": 2.5, "ood_target_in_scope_recall": 0.95,
                       "test_ece_before": 0.12, "test_ece_after": 0.05,
                       "out_of_scope_oos_test": {"n_in_scope": 30, "n_out_of_scope": 25, "auroc": 0.9,
                                                 "in_scope_recall": 0.9, "out_of_scope_recall": 0.6}},
        "per_class_test": {"card_lost": {"precision": 8 / 11, "recall": 0.8, "f1": 0.76, "support": 10},
                           "refund": {"precision": 5 / 8, "recall": 0.5, "f1": 0.56, "support": 10},
                           "transfer": {"precision": 9 / 11, "recall": 0.9, "f1": 0.86, "support": 10}},
        "confusion_matrix_test": MATRIX, "labels": LABELS,
        "fit": {"steps": 120, "best_step": 100, "best_metric": 0.8, "metric": "accuracy", "stopped_early": True,
                "train_seconds": 30.2},
        "cost": {"wall_seconds": 33.1, "cpu_seconds": 125.0, "peak_rss_mb": 1234.4, "trainable_params": 123456,
                 "total_params": 22_700_000, "train_samples": 960, "tokens_seen": 0,
                 "train_samples_per_second": 29.0, "trainable_fraction": 123456 / 22_700_000},
        "environment": {"cpus": 2, "device": "cpu", "packages": {"torch": "2.13.0"}},
    }


def test_most_confused_pairs_counts_and_shares_of_the_true_class():
    # off-diagonal cells by count: refund->card_lost 3 of 10, then card_lost->refund and refund->transfer
    # (2 of 10 each, in label order), then transfer->refund 1 of 10
    assert most_confused_pairs(MATRIX, LABELS) == [("refund", "card_lost", 3, 3 / 10),
                                                   ("card_lost", "refund", 2, 2 / 10),
                                                   ("refund", "transfer", 2, 2 / 10),
                                                   ("transfer", "refund", 1, 1 / 10)]
    assert most_confused_pairs(MATRIX, LABELS, top=1) == [("refund", "card_lost", 3, 0.3)]
    assert most_confused_pairs(np.eye(3, dtype=int) * 4, LABELS) == []  # no errors, no pairs


def test_classification_report_has_header_data_table_and_confused_pairs():
    md = render_report(classification_report())
    assert md.startswith("# Run report: support/intent-lora\n")
    assert "- **recipe**: `support/intent-lora` (task `classification`, mode `finetune`)" in md
    assert "- **model**: backbone `minilm`, LoRA adapters (r 8, alpha 16)" in md
    assert "- **finished**: 2026-12-02T01:00:00+00:00" in md
    assert "- **took**: 33.1 s wall, of which 30.2 s in the training loop" in md
    assert "| train | 1,200 | 3 | training used 300 of them; 40 `oos` rows set aside (not a class) |" in md
    assert "| validation | 100 | - | 20 `oos` rows set aside (not a class) |" in md
    assert "| oos_test | 25 | - | out-of-scope rows: scored for out-of-scope detection |" in md
    assert "- license: CC BY 3.0" in md and "- citation: Larson et al. (2019)" in md and "url" not in md
    assert "| test | 30 | 73.33% | 70.00% |" in md
    assert "Best validation accuracy: 80.00% at step 100 of 120 (stopped early)." in md
    assert "## Errors on the test split (30 rows)" in md
    assert "| `refund` | `card_lost` | 3 | 30.0% |" in md
    assert md.index("`refund` | `card_lost`") < md.index("`card_lost` | `refund`") < md.index("`transfer` | `refund`")
    # 3 classes: the worst one only (at most half of them), by F1
    assert "Worst classes by F1 (the 1 lowest of 3 classes)" in md
    assert "| `refund` | 56.0% | 62.5% | 50.0% | 10 |" in md and "| `transfer` | 86.0%" not in md
    assert "{'name'" not in md  # no dict dumped


def test_every_plot_caption_names_its_split_and_rows():
    md = render_report(classification_report())
    assert "![confusion matrix](confusion_matrix.png)" in md
    assert "*Confusion matrix, test split (30 rows); each row normalised by its true class' rows.*" in md
    assert "*Reliability diagram, test split (30 rows)" in md
    assert ("*Training curve: training loss by step (training split, 300 rows) and validation accuracy "
            "(validation split, 100 rows).*") in md
    assert "- temperature 1.500, fitted on the validation split (100 rows)" in md
    assert "- expected calibration error on the test split (30 rows): 0.1200 before temperature scaling, 0.0500 after" in md
    assert "set on the validation split to keep 95% of its in-scope rows" in md
    assert "| `oos_test` | 25 | 30 | 0.9000 | 60.0% | 90.0% |" in md


def test_cost_is_a_table_with_units():
    md = render_report(classification_report())
    cost = md[md.index("## Cost"):]
    assert "| wall time | 33.1 s |" in cost
    assert "| CPU time | 2 min 5 s |" in cost
    assert "| peak memory (RSS) | 1,234 MB |" in cost
    assert "| trainable parameters | 123,456 of 22.7M (0.54%) |" in cost  # 123456 / 22.7M = 0.544%
    assert "| training samples seen | 960 (29.0 per second of wall time) |" in cost
    assert "tokens seen" not in cost  # a counter left at 0 was not counted
    assert "wall_seconds" not in cost and "trainable_fraction" not in cost


def test_perfect_classes_are_never_listed_as_worst():
    report = classification_report()
    report["per_class_test"] = {lab: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10} for lab in LABELS}
    report["confusion_matrix_test"] = (np.eye(3, dtype=int) * 10).tolist()
    md = render_report(report)
    assert "No test row was misclassified." in md and "Worst classes" not in md


@pytest.mark.parametrize("report", [
    {},
    {"config": {"name": "old"}},
    # an early report: no data card, per-class report, confusion matrix, notes or fitted-on counts
    {"config": {"name": "support/intent-demo", "model": {"backbone": "minilm", "peft": "lora"}},
     "data": {"name": "demo_support", "num_labels": 12, "train": 264, "validation": 72, "test": 96, "oos": 40},
     "metrics": {"test": {"n": 96, "accuracy": 0.97}},
     "confidence": {"temperature": 0.9, "test_ece_before": 0.06, "test_ece_after": 0.02},
     "fit": {"steps": 0}, "cost": {"wall_seconds": 2.0}},
], ids=["empty", "config-only", "early-version"])
def test_old_and_minimal_reports_render(report):
    md = render_report(report)
    assert md.startswith("# Run report: ")
    assert "None" not in md and "{'" not in md


def test_an_early_report_takes_the_validation_rows_from_its_data_summary():
    md = render_report({"data": {"name": "d", "num_labels": 2, "train": 10, "validation": 72, "test": 96},
                          "metrics": {"test": {"n": 96, "accuracy": 0.5}},
                          "confidence": {"temperature": 0.9, "test_ece_before": 0.06, "test_ece_after": 0.02}})
    assert "fitted on the validation split (72 rows)" in md and "test split (96 rows)" in md
    assert "| split | rows | accuracy |\n" in md and "| test | 96 | 50.00% |\n" in md  # the columns it has
    assert "**recipe**" not in md  # no config: no recipe line


# ---------------------------------------------------------------- plot titles

@pytest.fixture
def saved_figures(monkeypatch):
    """The axes of each figure the plot functions save: (title, x tick labels) of the first axes."""
    from matplotlib.figure import Figure

    seen, save = [], Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        seen.append((ax.get_title(), [t.get_text() for t in ax.get_xticklabels()]))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return seen


def test_confusion_matrix_title_names_split_and_rows(saved_figures, tmp_path):
    from core.evaluation.metrics import plot_confusion_matrix

    plot_confusion_matrix(MATRIX, LABELS, tmp_path / "cm.png")
    plot_confusion_matrix(MATRIX, LABELS, tmp_path / "cm_val.png", split="validation")
    (title, ticks), (val_title, _) = saved_figures
    assert title.startswith("Confusion matrix, test split (30 rows), 3 classes") and ticks == LABELS
    assert val_title.startswith("Confusion matrix, validation split (30 rows)")
    assert (tmp_path / "cm.png").stat().st_size > 0


def test_a_150_class_confusion_matrix_has_index_ticks_not_names(saved_figures, tmp_path):
    from core.evaluation.metrics import plot_confusion_matrix

    k = 150
    matrix = np.eye(k, dtype=int) * 3
    matrix[0, 1] = 1
    plot_confusion_matrix(matrix, [f"intent_{i}" for i in range(k)], tmp_path / "cm.png")
    title, ticks = saved_figures[0]
    assert "test split (451 rows), 150 classes" in title
    assert ticks and all(t.lstrip("−-").isdigit() for t in ticks) and len(ticks) <= 12


def test_reliability_and_training_curve_titles_name_their_data(saved_figures, tmp_path):
    from core.confidence.calibrate import plot_reliability, softmax
    from core.evaluation.metrics import plot_loss_curve

    logits, y = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), np.array([0, 1, 1])
    plot_reliability({"before": (softmax(logits), y)}, tmp_path / "rel.png")
    rows = [{"step": 1, "train_loss": 1.0}, {"step": 2, "train_loss": 0.5, }, {"step": 2, "validation_accuracy": 0.7}]
    plot_loss_curve(rows, tmp_path / "loss.png", train_rows=300, validation_rows=100)
    plot_loss_curve(rows[:2], tmp_path / "loss_plain.png")
    (rel, _), (loss, _), (plain, _) = saved_figures
    assert rel.startswith("Reliability diagram, test split (3 rows)")
    assert "training loss: training data, 300 rows; validation accuracy: validation split, 100 rows" in loss
    assert plain.endswith("training loss: training data")
