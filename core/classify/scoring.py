"""The evaluations a classification run directory holds, and queries of a saved run.

`evaluate_trained` scores a just-trained model for its report (metrics per split, calibration on
test, out-of-scope detection, plots); `evaluation_sets` / `evaluate_run` / `predict_texts` score
and query a saved run (`verticals eval`, `verticals predict`); a multi-label run's are
core.classify.multilabel_scoring's.
Leaves out: writing the run directory (core.runs.rundir) and metric maths (core.evaluation.metrics,
core.confidence.calibrate, core.confidence.ood).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.classify.config import DataConfig
from core.classify.multilabel_scoring import evaluate_multilabel_run, predict_multilabel
from core.classify.run_data import load_run_data
from core.confidence.calibrate import expected_calibration_error, plot_reliability, softmax
from core.confidence.ood import auroc
from core.data.catalog import read_records, records_to_split, source_fingerprint
from core.data.splits import LabelMap, Split, partition_label
from core.evaluation.metrics import (
    ClassificationEvaluator,
    confusion,
    labelled_metrics,
    per_class_report,
    plot_confusion_matrix,
)
from core.foundation.errors import UserError
from core.models.multilabel import load_multilabel_head
from core.models.predictor import load_run, model_dir
from core.runs.rundir import read_report

if TYPE_CHECKING:
    from core.data.splits import Split


# ---------------------------------------------------------------- evaluating a model into / from a run

def is_out_of_scope_set(split, labels: list[str]) -> bool:
    """A set none of whose labels the classifier predicts: scored for out-of-scope detection."""
    return not set(split.labels) & set(labels)


def evaluate_trained(model, data, confidence: dict, run_dir: Path, device: str,
                     validation_logits: np.ndarray | None = None) -> dict:
    """Metrics on validation, test and extra sets (out-of-scope sets get OOS metrics), calibration
    on test, and the confusion-matrix and reliability plots. The test split is encoded once, the
    validation split not at all when the caller gives its logits (finish() has them already)."""
    if validation_logits is None:
        metrics = {"validation": ClassificationEvaluator(data.validation.texts, data.validation.labels)(model, device)}
    else:  # the argmax of the logits is the argmax of the calibrated probabilities
        y_val = np.asarray(LabelMap(model.labels).encode(data.validation.labels))
        metrics = {"validation": labelled_metrics(y_val, np.asarray(validation_logits).argmax(axis=1), model.labels)}
    logits, embeddings = model.predict_all(data.test.texts, device=device)
    y_test = np.asarray(LabelMap(model.labels).encode(data.test.labels))
    y_pred = logits.argmax(axis=1)  # temperature scaling never changes the argmax
    metrics["test"] = labelled_metrics(y_test, y_pred, model.labels)
    confidence = confidence | calibration_on_test(logits, y_test, model.temperature, run_dir / "reliability.png")
    skipped = {}
    for name, split in data.extra.items():
        unknown = set(split.labels) - set(model.labels)
        if is_out_of_scope_set(split, model.labels) and model.ood is not None:
            confidence[f"out_of_scope_{name}"] = out_of_scope_metrics(model, (logits, embeddings), split, device)
        elif unknown:
            skipped[name] = f"labels the classifier does not predict: {sorted(unknown)[:5]}"
        else:
            metrics[name] = ClassificationEvaluator(split.texts, split.labels)(model, device)
    matrix = confusion(y_test, y_pred, len(model.labels))
    plot_confusion_matrix(matrix, model.labels, run_dir / "confusion_matrix.png")
    return {"metrics": metrics, "skipped_evaluations": skipped, "confidence": confidence,
            "per_class_test": per_class_report(y_test, y_pred, model.labels),
            "confusion_matrix_test": matrix.tolist(), "labels": model.labels}


def calibration_on_test(logits: np.ndarray, y: np.ndarray, temperature: float, plot_path: Path) -> dict:
    before, after = softmax(logits), softmax(logits, temperature)
    plot_reliability({"before (T=1)": (before, y), f"after (T={temperature:.2f})": (after, y)}, plot_path)
    return {"test_ece_before": expected_calibration_error(before, y),
            "test_ece_after": expected_calibration_error(after, y)}


def out_of_scope_metrics(model, in_scope_outputs: tuple[np.ndarray, np.ndarray], out_scope, device: str) -> dict:
    """AUROC and recalls at the model's threshold; `in_scope_outputs` = (logits, embeddings) of the
    in-scope test split, already computed by the caller."""
    detector, threshold = model.ood, model.ood.threshold
    in_scores = detector.scores(*in_scope_outputs, model.temperature)
    out_scores = detector.scores(*model.predict_all(out_scope.texts, device=device), model.temperature)
    return {"n_in_scope": len(in_scores), "n_out_of_scope": len(out_scores),
            "auroc": auroc(in_scores, out_scores),
            "in_scope_recall": float((in_scores >= threshold).mean()),
            "out_of_scope_recall": float((out_scores < threshold).mean())}


@dataclass(frozen=True)
class EvaluationSets:
    """What `verticals eval` scores: in-scope rows, out-of-scope sets, and a sentence saying which."""

    description: str  # e.g. "test split of data.csv: 96 rows"
    split: str | None  # None: every row of a file the run was not trained on
    in_scope: Split
    out_of_scope: dict  # name -> Split of rows the classifier has no label for


def _is_run_data(spec: str, source: str, fingerprint: str | None) -> bool:
    """Whether `spec` names the data the run was trained on (same name, same file, or the same bytes)."""
    if spec == source:
        return True
    given, trained = Path(spec).expanduser(), Path(source).expanduser()
    if given.exists() and trained.exists() and given.resolve() == trained.resolve():
        return True
    return fingerprint is not None and given.exists() and source_fingerprint(spec) == fingerprint


def evaluation_sets(report: dict, labels: list[str], data_spec: str | None = None, *, split: str | None = None,
                    data_dir: str | None = None, columns: dict[str, str] | None = None) -> EvaluationSets:
    """The rows `evaluate_run` scores. The run's own data (no `data_spec`, or the same file): its
    `split` (default test), rebuilt exactly as training built it (`load_run_data`: same loader,
    split seed and out-of-scope handling), so training rows are never scored as held-out. Another
    file: every row of it (or its `split`, when given, split the same way). `columns`: text_column,
    label_column, encoding for files (default: the run's)."""
    saved = report["config"]["data"]
    run_cfg = DataConfig(**{f.name: saved[f.name] for f in fields(DataConfig) if f.name in saved})
    spec = data_spec or run_cfg.source
    own = _is_run_data(spec, run_cfg.source, report.get("data", {}).get("source_sha256"))
    cfg = replace(run_cfg, source=spec, **(columns or {}))
    path = Path(spec).expanduser()
    name = path.name if path.exists() else spec
    if not own and path.is_file() and split is None:
        rows = records_to_split(read_records(path, cfg.encoding), path, cfg.text_column, cfg.label_column)
        in_scope, out = partition_label(rows, cfg.oos_label) if cfg.oos_label else (rows, Split([], []))
        desc = f"every row of {name} (not the file the run was trained on): {len(rows)} rows"
        return EvaluationSets(desc, None, in_scope, {cfg.oos_label: out} if len(out) else {})
    if data_spec is None and not path.exists() and ("/" in spec or spec.endswith((".csv", ".jsonl", ".tsv"))):
        raise UserError(f"the run was trained on '{spec}', which is not found from {Path.cwd()}; pass --data "
                        f"with its path (the same file gets the same {split or 'test'} split as in training)")

    data, _ = load_run_data(cfg, data_dir)
    chosen = split or "test"
    splits = {"train": data.train, "validation": data.validation, "test": data.test, **data.extra}
    if chosen not in splits:
        raise UserError(f"{name} has no split '{chosen}'; choose one of {', '.join(splits)} (--split)")
    in_scope, out_sets = splits[chosen], {}
    if chosen in ("train", "validation", "test"):
        # as in the run's report: the rows set aside from this split, and with test every extra
        # set the classifier has no label for (e.g. a dataset's oos.csv)
        for extra_name, extra in data.extra.items():
            unknown = len(extra) and is_out_of_scope_set(extra, labels)
            if extra_name == f"oos_{chosen}" or (chosen == "test" and unknown and extra_name != "oos_validation"):
                out_sets[extra_name] = extra
    elif cfg.oos_label:
        in_scope, out = partition_label(in_scope, cfg.oos_label)
        out_sets = {cfg.oos_label: out} if len(out) else {}
    desc = f"{chosen} split of {name}: {len(in_scope)} rows"
    used = report.get("data", {}).get("train_used")
    if chosen == "train" and own and used:
        desc += f" (training used {used} of them)"
    if out_sets:
        desc += " + out-of-scope " + ", ".join(f"'{k}' {len(v)} rows" for k, v in out_sets.items())
    return EvaluationSets(desc, chosen, in_scope, out_sets)


def evaluate_run(run_dir: Path, data_spec: str | None = None, *, data_dir: str | None = None,
                 split: str | None = None, columns: dict[str, str] | None = None, runtime: str = "torch",
                 model=None) -> dict:
    """Metrics of a saved run on the rows `evaluation_sets` picks (by default its own test split),
    with out-of-scope AUROC and recalls for the out-of-scope sets beside them. The run's model is
    loaded in `runtime` (core.models.predictor.load_run) unless `model` (a Predictor of it) is given.
    A multi-label run (model/multilabel.json) is scored as one (core.classify.multilabel_scoring)."""
    run_dir = Path(run_dir)
    report = read_report(run_dir)
    model = load_run(run_dir, runtime) if model is None else model
    head = load_multilabel_head(model_dir(run_dir))
    if head is not None:
        return evaluate_multilabel_run(report, model, head, data_spec, split=split, data_dir=data_dir, columns=columns)
    sets = evaluation_sets(report, model.labels, data_spec, split=split, data_dir=data_dir, columns=columns)
    if not len(sets.in_scope):
        raise UserError(f"{sets.description}: no in-scope rows to classify; give in-scope rows too, to measure "
                        f"how well out-of-scope ones are told apart")
    y = np.asarray(LabelMap(model.labels).encode(sets.in_scope.labels))
    outputs = model.predict_all(sets.in_scope.texts)
    y_pred = outputs[0].argmax(axis=1)  # temperature scaling never changes the argmax
    result = {"evaluated": sets.description, "split": sets.split,
              **labelled_metrics(y, y_pred, model.labels, details=True)}
    if sets.out_of_scope and model.ood is None:
        result["out_of_scope_skipped"] = "the run has no out-of-scope scorer (trained with ood_scorer=none)"
    elif sets.out_of_scope:
        result["out_of_scope"] = {name: out_of_scope_metrics(model, outputs, rows, "cpu")
                                  for name, rows in sets.out_of_scope.items()}
    return result


def predict_texts(model, texts: list[str], top_k: int = 3, multi_label=None) -> list[dict]:
    """{"text", "label", "confidence", "top_k"} per text from softmax probabilities; with `multi_label`
    (the run's core.models.multilabel.MultiLabelHead) the multi-label rows of
    core.classify.multilabel_scoring.predict_multilabel."""
    if multi_label is not None:
        return predict_multilabel(model, multi_label, texts, top_k=top_k)
    probs = model.predict_proba(texts)
    out = []
    for text, p in zip(texts, probs):
        order = np.argsort(-p)[:top_k]
        out.append({"text": text, "label": model.labels[order[0]], "confidence": round(float(p[order[0]]), 4),
                    "top_k": [{"label": model.labels[i], "probability": round(float(p[i]), 4)} for i in order]})
    return out
