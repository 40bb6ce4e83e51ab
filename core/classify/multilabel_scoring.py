"""Queries and evaluations of a saved multi-label run (`verticals predict` / `eval`, `Run.predict` / `evaluate`).

A multi-label run (model/multilabel.json, core.models.multilabel.MultiLabelHead) is read as the
router reads it (solutions.support.multi_intent): per-label probabilities sigmoid(logits / T), the
predicted labels are those at or above their own thresholds, and a text is out of scope when no
label clears its threshold and the run's out-of-scope scorer puts it far from every intent
(MultiLabelHead.out_of_scope; with no scorer, every text without a label is out of scope).
- `predict_multilabel`: one row per text: `labels` (the predicted set, most probable first, each
  with its probability and threshold), `label` / `confidence` (the primary label and its
  probability; `label` None when no label clears its threshold, `confidence` then the highest
  probability), `out_of_scope`, `top_k` (the most probable labels, whether predicted or not).
- `evaluate_multilabel_run`: exact-set accuracy, micro/macro F1, top-1 accuracy and per-label
  precision/recall/F1 (core.evaluation.multilabel) on the run's own split (rebuilt as training
  built it: same reader, split seed and out-of-scope rows set aside) or on every row of another
  file with a `labels` column (`a|b` in CSV, a JSON list in JSONL; a `label` column reads as one
  label per row); rows labelled only the run's oos_label are scored for out-of-scope handover.
Leaves out: single-label runs (core.classify.scoring), training (core.classify.multilabel).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from core.classify.multilabel_config import MultiLabelDataConfig
from core.data.catalog import read_records
from core.data.multilabel import (
    MultiLabelSplit,
    load_multilabel,
    multi_hot,
    records_to_multilabel_split,
    set_aside_label,
)
from core.evaluation.multilabel import multilabel_metrics, per_label_report
from core.foundation.errors import UserError


def multilabel_outputs(model, head, texts: list[str]) -> dict:
    """Calibrated probabilities, decisions, primary labels and out-of-scope flags of `texts`."""
    logits, embeddings = model.predict_all(texts)
    probs = head.probabilities(logits, model.temperature)
    scores = None if model.ood is None else model.ood.scores(logits, embeddings, model.temperature)
    return {"probs": probs, "decided": head.decide(probs), "primary": head.primary(probs),
            "out_of_scope": head.out_of_scope(probs, scores, None if model.ood is None else model.ood.threshold)}


def predict_multilabel(model, head, texts: list[str], top_k: int = 3) -> list[dict]:
    """One row per text (see the module docstring)."""
    if not texts:
        return []
    out, labels, rows = multilabel_outputs(model, head, texts), model.labels, []
    for i, text in enumerate(texts):
        p = out["probs"][i]
        chosen = [j for j in np.argsort(-p, kind="stable") if out["decided"][i, j]]
        primary = int(out["primary"][i])
        rows.append({"text": text, "label": labels[primary] if chosen else None,
                     "confidence": round(float(p[primary]), 4),
                     "labels": [{"label": labels[j], "probability": round(float(p[j]), 4),
                                 "threshold": round(float(head.thresholds[j]), 4)} for j in chosen],
                     "out_of_scope": bool(out["out_of_scope"][i]),
                     "top_k": [{"label": labels[j], "probability": round(float(p[j]), 4)}
                               for j in np.argsort(-p, kind="stable")[:top_k]],
                     "multi_label": True})
    return rows


def _data_config(report: dict, columns: dict[str, str] | None) -> MultiLabelDataConfig:
    saved = report["config"]["data"]
    cfg = MultiLabelDataConfig(**{f.name: saved[f.name] for f in fields(MultiLabelDataConfig) if f.name in saved})
    columns = dict(columns or {})
    if "label_column" in columns and "labels_column" not in columns:  # `label_column=` names the labels here too
        columns["labels_column"] = columns.pop("label_column")
    unknown = set(columns) - {"text_column", "labels_column", "encoding"}
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))} for a multi-label run; give "
                        f"text_column=, labels_column= (or label_column=), encoding=")
    return replace(cfg, **columns)


def multilabel_evaluation_sets(report: dict, data_spec: str | None = None, *, split: str | None = None,
                               data_dir: str | None = None, columns: dict[str, str] | None = None) -> tuple:
    """(description, split name or None, in-scope MultiLabelSplit, {name: out-of-scope MultiLabelSplit})."""
    cfg = _data_config(report, columns)
    spec = data_spec or cfg.source
    path = Path(spec).expanduser()
    name = path.name if path.exists() else spec
    if data_spec is not None and path.is_file() and split is None:
        rows = records_to_multilabel_split(read_records(path, cfg.encoding), path, cfg.text_column,
                                           cfg.labels_column, cfg.label_column)
        oos = [i for i, s in enumerate(rows.label_sets) if cfg.oos_label and s == (cfg.oos_label,)]
        keep = [i for i in range(len(rows)) if i not in set(oos)]
        out = {cfg.oos_label: rows.subset(oos)} if oos else {}
        return f"every row of {name}: {len(rows)} rows", None, rows.subset(keep), out
    data = load_multilabel(spec, root=data_dir, text_column=cfg.text_column, labels_column=cfg.labels_column,
                           label_column=cfg.label_column, encoding=cfg.encoding)
    data = set_aside_label(data, cfg.oos_label)[0] if cfg.oos_label else data
    chosen = split or "test"
    splits = {"train": data.train, "validation": data.validation, "test": data.test, **data.extra}
    if chosen not in splits:
        raise UserError(f"{name} has no split '{chosen}'; choose one of {', '.join(splits)} (--split)")
    out = {f"oos_{chosen}": data.extra[f"oos_{chosen}"]} if f"oos_{chosen}" in data.extra else {}
    return f"{chosen} split of {name}: {len(splits[chosen])} rows", chosen, splits[chosen], out


def evaluate_multilabel_run(report: dict, model, head, data_spec: str | None = None, *, split: str | None = None,
                            data_dir: str | None = None, columns: dict[str, str] | None = None) -> dict:
    """Metrics of a saved multi-label run on the rows `multilabel_evaluation_sets` picks."""
    desc, chosen, rows, oos_sets = multilabel_evaluation_sets(report, data_spec, split=split, data_dir=data_dir,
                                                              columns=columns)
    if not len(rows):
        raise UserError(f"{desc}: no in-scope rows to classify")
    y = multi_hot(rows.label_sets, model.labels)  # a label the run does not know is a UserError naming it
    out = multilabel_outputs(model, head, rows.texts)
    result = {"evaluated": desc, "split": chosen, "multi_label": True,
              **multilabel_metrics(y, out["decided"], out["probs"]),
              "per_label": per_label_report(y, out["decided"], model.labels),
              "out_of_scope_rate": float(out["out_of_scope"].mean())}
    if oos_sets:
        result["out_of_scope"] = {name: _handover(model, head, split_rows) for name, split_rows in oos_sets.items()}
    return result


def _handover(model, head, rows: MultiLabelSplit) -> dict:
    flagged = multilabel_outputs(model, head, rows.texts)["out_of_scope"]
    return {"n_out_of_scope": len(rows), "out_of_scope_recall": float(flagged.mean())}
