"""report.md and the model card of a multi-label run (`task: multilabel-classification`).

report.md: the header, the data (rows per split and how many carry several labels), the metrics
per split (exact-set accuracy, micro/macro F1, top-1 accuracy), each label's threshold with its
test precision/recall/F1, calibration (the shared sigmoid temperature, ECE of the per-label
probabilities) and out-of-scope detection, training and cost. The model card says how to load an
export (`pipeline("text-classification", top_k=None, function_to_apply="sigmoid")`) and that the
thresholds and the out-of-scope rule are applied by the verticals router only.
Leaves out: computing any of it (core.classify.multilabel).
"""

from __future__ import annotations

from core.classify.report import training_section
from core.runs.card import HubKind, card_text, data_and_metrics, fmt, precision_section, table
from core.runs.markdown import (
    cost_section,
    data_card_lines,
    header_section,
    markdown_table,
    metrics_section,
    num,
    pct,
    render_markdown,
)
from core.runs.tasks import ReportRenderer

MULTILABEL_KIND = HubKind(library_name="transformers", pipeline_tag="text-classification",
                          tags=("text-classification", "multi-label-classification"),
                          index_task={"type": "text-classification", "name": "Multi-label Text Classification"})


def data_section(report: dict) -> list[str]:
    data = report.get("data") or {}
    if not data:
        return []
    multi = data.get("multi_label_rows") or {}
    rows = [[split, num(data[split]), num(multi.get(split, "-"))] for split in data
            if isinstance(data[split], int) and split not in ("num_labels", "train_used")]
    lines = ["## Data", "", *markdown_table(["split", "rows", "rows with several labels"], rows)]
    if data.get("num_labels"):
        lines += ["", f"The classifier has {data['num_labels']} labels (the training split's), one sigmoid each."]
    if data.get("train_used"):
        lines.append(f"Training used {data['train_used']} of the training rows (train_limit).")
    return lines + data_card_lines(report)


def labels_section(report: dict) -> list[str]:
    thresholds, per_label = report.get("thresholds") or {}, report.get("per_label_test") or {}
    if not thresholds:
        return []
    rows = [[f"`{label}`", num(t, 2), pct(per_label.get(label, {}).get("precision"), 1),
             pct(per_label.get(label, {}).get("recall"), 1), pct(per_label.get(label, {}).get("f1"), 1),
             per_label.get(label, {}).get("support", "-")] for label, t in thresholds.items()]
    return ["## Labels: thresholds (chosen on validation) and test scores", "",
            *markdown_table(["label", "threshold", "precision", "recall", "F1", "test rows"], rows)]


def confidence_section(report: dict) -> list[str]:
    conf = report.get("confidence") or {}
    if not conf:
        return []
    lines = ["## Calibration and out-of-scope detection", "",
             f"- probabilities: {conf.get('probabilities', 'sigmoid per label')}; temperature "
             f"{num(conf.get('temperature'), 3)}, fitted on the validation split ({conf.get('temperature_fitted_on')} rows)"]
    if "test_ece_before" in conf:
        lines.append(f"- ECE of the per-label probabilities on test ({conf.get('ece_convention', '')}): "
                     f"{num(conf['test_ece_before'])} at T=1, {num(conf.get('test_ece_after'))} after; over the "
                     f"entries predicted positive (p >= 0.5): {num(conf.get('test_positive_ece_after'))}")
    for key in ("temperature_note", "ood_note"):
        if conf.get(key):
            lines.append(f"- note: {conf[key]}")
    if "ood_scorer" in conf:
        lines.append(f"- out of scope: {conf.get('ood_rule')} (scorer `{conf['ood_scorer']}`, threshold "
                     f"{num(conf.get('ood_threshold'))}, keeps {pct(conf.get('ood_target_in_scope_recall'), 0)} of "
                     f"in-scope validation rows)")
    sets = {k[len("out_of_scope_"):]: v for k, v in conf.items() if k.startswith("out_of_scope_") and isinstance(v, dict)}
    if sets:
        lines += ["", *markdown_table(["out-of-scope set", "rows", "AUROC", "handed over", "in-scope test kept"],
                                      [[f"`{n}`", num(v.get("n_out_of_scope")), num(v.get("auroc")),
                                        pct(v.get("out_of_scope_recall"), 1), pct(v.get("in_scope_recall"), 1)]
                                       for n, v in sets.items()])]
    return lines


def render_report(report: dict) -> str:
    return render_markdown(report, (header_section, data_section, metrics_section, labels_section,
                                    confidence_section, training_section, cost_section))


def loading_lines(exported: bool) -> list[str]:
    where = "OUT" if exported else "OUT (after `verticals export hf RUN_DIR OUT`)"
    return [f"Load {where} in plain `transformers` (the model class ships as `modeling_verticals.py`):", "",
            "```python", "from transformers import pipeline", "",
            "classify = pipeline(\"text-classification\", model=\"OUT\", trust_remote_code=True, top_k=None,",
            "                    function_to_apply=\"sigmoid\")",
            "classify(\"cancel my order and refund the card\", truncation=True)  # every label with its probability",
            "```", "",
            "The scores are the calibrated per-label probabilities (the temperature is folded into the head). "
            "`pipeline()` does not apply the per-label thresholds or the out-of-scope rule: config.json records "
            "them under `verticals`, and the verticals router (`verticals support route` / `verticals serve`) "
            "applies them."]


def model_card(report: dict, *, exported: bool = False) -> str:
    cfg = report.get("config") or {}
    labels = report.get("labels") or []
    summary = [f"A {len(labels)}-label multi-label text classifier (a sigmoid per label) trained with the verticals "
               f"recipe `{cfg.get('name') or 'verticals model'}` on the backbone "
               f"`{(cfg.get('model') or {}).get('backbone')}`.", cfg.get("description") or ""]
    thresholds, per_label = report.get("thresholds") or {}, report.get("per_label_test") or {}
    rows = [[i, label, thresholds.get(label, "-"), per_label.get(label, {}).get("f1", "-")]
            for i, label in enumerate(labels)]
    conf = report.get("confidence") or {}
    sections = ["", "## How to load", "", *loading_lines(exported),
                "", "## Labels", "", *table(["id", "label", "threshold", "test F1"], rows),
                *data_and_metrics(report),
                "", "## Calibration and out-of-scope", "",
                f"- temperature {fmt(conf.get('temperature'))} shared by every label; test ECE of the per-label "
                f"probabilities {fmt(conf.get('test_ece_before'))} before, {fmt(conf.get('test_ece_after'))} after",
                f"- out of scope: {conf.get('ood_rule', 'no label clears its threshold')}",
                *precision_section(report, exported)]
    limits = ["- it predicts only the labels listed above; a label is on when its probability reaches its threshold."]
    return card_text(report, MULTILABEL_KIND, summary, sections, limits)


MULTILABEL_REPORT = ReportRenderer(markdown=render_report, card=model_card)
