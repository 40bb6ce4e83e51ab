"""A classification run's report.md: the sections only a classifier has, and its ReportRenderer.

`render_report(report)` lists, in order: core.runs.markdown's header, the data as splits (rows and
classes per split, out-of-scope rows set aside, extra evaluation sets and what became of them), the
metrics per split, the test split's most-confused class pairs and worst classes by F1 (a 150-class
confusion matrix alone says little), calibration and out-of-scope detection with the split each
number comes from, zero-shot settings, the training (steps, or the frozen encoder's head), the
cost, and the plots with captions that name their split and row count. `CLASSIFICATION_REPORT`
pairs it with the model card (core.classify.card); every classification mode and safe retraining
write their run with it. Leaves out: the generic sections (core.runs.markdown) and computing
anything (metrics come from core.evaluation.metrics, core.confidence, recorded by the recipes).
"""

from __future__ import annotations

import numpy as np

from core.classify.card import model_card
from core.runs.markdown import (
    cost_section,
    data_card_lines,
    data_counts,
    header_section,
    markdown_table,
    metrics_section,
    num,
    pct,
    plot,
    render_markdown,
    row_count,
)
from core.runs.tasks import ReportRenderer

MOST_CONFUSED = 10  # pairs listed from the test confusion matrix
WORST_CLASSES = 10  # classes listed by F1 (at most half of them, so a 12-class run keeps its best ones out)
SPLIT_KEYS = {"name", "num_labels", "train", "validation", "test", "train_used", "out_of_scope_rows_set_aside",
              "source_sha256"}


def _split_notes(name: str, report: dict) -> str:
    """What became of an extra evaluation set (scored for out-of-scope detection, scored, skipped)."""
    if f"out_of_scope_{name}" in (report.get("confidence") or {}):
        return "out-of-scope rows: scored for out-of-scope detection"
    if name in (report.get("skipped_evaluations") or {}):
        return f"not evaluated: {report['skipped_evaluations'][name]}"
    if name in (report.get("metrics") or {}):
        return "extra labelled set: scored like test"
    return ""


def _split_rows(report: dict) -> list[list]:
    """Rows of the split table: train / validation / test with their classes and notes, then extra sets."""
    data = report.get("data") or {}
    test_classes = sum(1 for c in (report.get("per_class_test") or {}).values() if c.get("support"))
    aside = data.get("out_of_scope_rows_set_aside") or {}
    oos_label = (report.get("config") or {}).get("data", {}).get("oos_label") or "out-of-scope"
    rows = []
    for split in ("train", "validation", "test"):
        if split not in data:
            continue
        classes = data.get("num_labels", "-") if split == "train" else (
            test_classes or "-") if split == "test" else "-"
        notes = []
        if split == "train" and "train_used" in data:
            notes.append(f"training used {data['train_used']:,} of them")
        if aside.get(split):
            notes.append(f"{aside[split]:,} `{oos_label}` rows set aside (not a class)")
        rows.append([split, f"{data[split]:,}", classes, "; ".join(notes)])
    for name, n in data.items():
        if name not in SPLIT_KEYS and isinstance(n, int):
            rows.append([name, f"{n:,}", "-", _split_notes(name, report)])
    return rows


def data_section(report: dict) -> list[str]:
    """## Data: rows and classes per split (a summary without splits: its counts), and the data card."""
    data = report.get("data") or {}
    if not data:
        return []
    if "train" not in data and "test" not in data:
        return ["## Data", "", *data_counts(data), *data_card_lines(report)]
    lines = ["## Data", "", *markdown_table(["split", "rows", "classes", "note"], _split_rows(report))]
    if data.get("num_labels"):
        lines += ["", f"The classifier predicts {data['num_labels']} classes (the training split's labels)."]
    return lines + data_card_lines(report)


def most_confused_pairs(matrix, labels: list[str], top: int = MOST_CONFUSED) -> list[tuple[str, str, int, float]]:
    """(true label, predicted label, count, count / rows of the true class) for the `top` largest
    off-diagonal cells of a [true, predicted] count matrix; ties by share, then label order."""
    m = np.asarray(matrix, dtype=np.int64)
    row_totals = m.sum(axis=1)
    cells = [(int(m[i, j]), m[i, j] / row_totals[i], i, j) for i, j in zip(*np.nonzero(m)) if i != j]
    cells.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    return [(labels[i], labels[j], count, float(share)) for count, share, i, j in cells[:top]]


def errors_section(report: dict) -> list[str]:
    matrix, labels = report.get("confusion_matrix_test"), report.get("labels")
    per_class = report.get("per_class_test") or {}
    if not (matrix and labels) and not per_class:
        return []
    n_test = (report.get("metrics") or {}).get("test", {}).get("n")
    if n_test is None and matrix:
        n_test = int(np.asarray(matrix).sum())
    lines = [f"## Errors on the test split ({row_count(n_test)})"]
    if matrix and labels and len(matrix) == len(labels):
        pairs = most_confused_pairs(matrix, labels)
        lines += ["", f"Most confused pairs (true class -> predicted class, top {MOST_CONFUSED}):", ""]
        lines += markdown_table(["true", "predicted", "count", "share of the true class' rows"],
                                [[f"`{t}`", f"`{p}`", c, pct(s, 1)] for t, p, c, s in pairs]) if pairs else \
            ["No test row was misclassified."]
    scored = [(lab, c) for lab, c in per_class.items() if c.get("support")]  # a class absent from test has no F1
    imperfect = [(lab, c) for lab, c in scored if c.get("f1", 0.0) < 1.0]
    if imperfect:
        worst = sorted(imperfect, key=lambda lc: (lc[1].get("f1", 0.0), -lc[1]["support"], lc[0]))
        worst = worst[:min(WORST_CLASSES, max(1, len(scored) // 2))]
        lines += ["", f"Worst classes by F1 (the {len(worst)} lowest of {len(scored)} classes):", ""]
        lines += markdown_table(["class", "F1", "precision", "recall", "test rows"],
                                [[f"`{lab}`", pct(c.get("f1"), 1), pct(c.get("precision"), 1),
                                  pct(c.get("recall"), 1), c["support"]] for lab, c in worst])
    if matrix or (report.get("config") or {}).get("task"):  # an early report (no task key) had no plot
        lines += plot("confusion_matrix.png", f"Confusion matrix, test split ({row_count(n_test)}); each row "
                                               f"normalised by its true class' rows")
    return lines


def confidence_section(report: dict) -> list[str]:
    conf = report.get("confidence") or {}
    if not conf:
        return []
    n_val = (report.get("data") or {}).get("validation")
    n_test = (report.get("metrics") or {}).get("test", {}).get("n") or (report.get("data") or {}).get("test")
    fitted_on = conf.get("temperature_fitted_on", n_val)
    lines = ["## Calibration and out-of-scope detection", ""]
    if "temperature" in conf:
        lines.append(f"- temperature {conf['temperature']:.3f}, fitted on the validation split ({row_count(fitted_on)})")
    if "test_ece_before" in conf:
        lines.append(f"- expected calibration error on the test split ({row_count(n_test)}): "
                     f"{num(conf['test_ece_before'])} before temperature scaling, "
                     f"{num(conf.get('test_ece_after'))} after")
    if conf.get("temperature_note"):
        lines.append(f"- note: {conf['temperature_note']}")
    if "ood_scorer" in conf:
        recall = conf.get("ood_target_in_scope_recall")
        lines.append(f"- out-of-scope scorer `{conf['ood_scorer']}`, threshold {num(conf.get('ood_threshold'))}: "
                     f"set on the validation split to keep {pct(recall, 0)} of its in-scope rows")
    if conf.get("ood_note"):
        lines.append(f"- note: {conf['ood_note']}")
    sets = {k[len("out_of_scope_"):]: v for k, v in conf.items() if k.startswith("out_of_scope_") and isinstance(v, dict)}
    if sets:
        lines += ["", ("Out-of-scope detection at that threshold, on each out-of-scope set against the in-scope "
                       "test rows:"), ""]
        lines += markdown_table(["out-of-scope set", "out-of-scope rows", "in-scope test rows", "AUROC",
                         "out-of-scope recall (handed over)", "in-scope recall (kept)"],
                        [[f"`{name}`", num(v.get("n_out_of_scope")), num(v.get("n_in_scope")), num(v.get("auroc")),
                          pct(v.get("out_of_scope_recall"), 1), pct(v.get("in_scope_recall"), 1)]
                         for name, v in sets.items()])
    if "test_ece_before" in conf:
        lines += plot("reliability.png", f"Reliability diagram, test split ({row_count(n_test)}): accuracy against "
                                          f"confidence, before and after temperature scaling")
    return lines


def zeroshot_section(report: dict) -> list[str]:
    zeroshot = report.get("zeroshot")
    if not zeroshot:
        return []
    return ["## Zero-shot", "",
            (f"- descriptions: {zeroshot.get('descriptions', '-')}; starting temperature "
             f"{zeroshot.get('temperature', '-')} (probabilities: {zeroshot.get('probabilities', '-')})"),
            f"- labelled data used: {zeroshot.get('labelled_data_used', '-')}"]


def training_section(report: dict) -> list[str]:
    fit, data = report.get("fit") or {}, report.get("data") or {}
    lines = []
    probe = report.get("probe") or {}
    if "c" in probe:
        lines.append(f"- linear-probe head: C = {probe['c']} (chosen on the validation split)")
    if not fit.get("steps"):
        mode = (report.get("config") or {}).get("mode")
        frozen = (f"- no gradient steps{f' (mode `{mode}`)' if mode else ''}: the encoder stays frozen and the "
                  f"head is set directly (a linear probe, or label prototypes)")
        return ["## Training", "", *lines, frozen] if fit else []
    n_train = data.get("train_used", data.get("train"))
    lines.append(f"- {fit['steps']:,} optimizer steps{' (stopped early)' if fit.get('stopped_early') else ''}")
    caption = (f"Training curve: training loss by step (training split, {row_count(n_train)}) and validation "
               f"{fit.get('metric', 'metric')} (validation split, {row_count(data.get('validation'))})")
    return ["## Training", "", *lines, *plot("loss_curve.png", caption)]


def render_report(report: dict) -> str:
    """report.md of a classification run (see the module docstring)."""
    return render_markdown(report, (header_section, data_section, metrics_section, errors_section,
                                    confidence_section, zeroshot_section, training_section, cost_section))


CLASSIFICATION_REPORT = ReportRenderer(markdown=render_report, card=model_card)
