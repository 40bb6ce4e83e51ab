"""Run directory writer/reader, and the evaluations a run directory holds.

A run directory holds: config.yaml (resolved), metrics.jsonl and loss_curve.png (runs that take
gradient steps), model/, report.json, report.md, confusion_matrix.png, reliability.png
(+ checkpoint/ while training). `claim_run_dir` decides, before any work, whether a training job
may write into a directory: it never silently replaces a finished run, resumes one, or resumes
with other settings. `evaluate_trained` scores a just-trained model for its report (metrics and
plots); `evaluation_sets` / `evaluate_run` / `predict_texts` score and query a saved run
(`verticals eval`, `verticals predict`). Leaves out: training (core.recipes) and metric maths
(core.evaluate, core.calibrate, core.ood).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from core.config import DataConfig
from core.errors import UserError

if TYPE_CHECKING:
    from core.data import Split

REPORT_FILE = "report.json"


def environment() -> dict:
    import os

    versions = {}
    for pkg in ("torch", "transformers", "peft", "sentence_transformers", "sklearn", "numpy"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except Exception:  # an optional package missing from this environment
            versions[pkg] = None
    # a load average above the core count at record time means other jobs shared the CPUs
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "packages": versions}


# What a run writes: `--overwrite` removes these and nothing else (a user's --out may hold other files).
RUN_FILES = ("config.yaml", "metrics.jsonl", REPORT_FILE, "report.md", "README.md", "loss_curve.png",
             "confusion_matrix.png", "reliability.png", "feedback_trained.json")
RUN_DIRS = ("model", "checkpoint", "checkpoint.old", "tensorboard")
# settings a resumed run may change: where it runs and where it is tracked, not what it learns
RESUMABLE_CHANGES = {"device", "backend", "uri", "experiment"}


def flat_config(config: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}: a config as its dotted keys."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat_config(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, new: dict) -> list[str]:
    """'section.key: old -> new' for every setting that differs (a key only one side has included)."""
    a, b = flat_config(saved), flat_config(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k.rpartition(".")[2] not in RESUMABLE_CHANGES]


def claim_run_dir(run_dir: Path, config: dict, *, resume: bool, overwrite: bool,
                  has_checkpoint: bool, clear: bool = True) -> bool:
    """Check that a training job may write `config`'s run into `run_dir`; True when it resumes.

    Fresh (missing, or no run files in it): train. A finished run (report.json) or an unfinished
    one: refused unless `overwrite` (its run files are removed first) or, for an unfinished run with
    a checkpoint, `resume` with the very settings it was started with. `clear=False` checks the
    same and removes nothing: the processes of a distributed run other than the main one, which
    clears the directory for all of them."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite starts it again: choose one")
    existing = [n for n in RUN_FILES + RUN_DIRS if (run_dir / n).exists()]
    finished = (run_dir / REPORT_FILE).is_file()
    if overwrite:
        import shutil

        for name in existing if clear else ():
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return False
    if resume:
        if finished:
            raise UserError(f"{run_dir} is a finished run (it has {REPORT_FILE}): there is nothing to resume. "
                            f"Train into another --out, or add --overwrite to train it again from scratch.")
        if not has_checkpoint:
            raise UserError(f"{run_dir} has no checkpoint to resume from. Drop --resume to train"
                            f"{', adding --overwrite to replace what is there' if existing else ''}.")
        saved_file = run_dir / "config.yaml"
        saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else {}
        changes = config_changes(saved or {}, config)
        if changes:
            raise UserError(f"--resume with settings that differ from the run's config.yaml: {'; '.join(changes)}. "
                            f"Resume with the same recipe and overrides, or add --overwrite (instead of --resume) "
                            f"to start again with the new ones.")
        return True
    if finished:
        raise UserError(f"{run_dir} already holds a finished run. Choose another --out, or add --overwrite "
                        f"to replace it.")
    if existing and has_checkpoint:
        raise UserError(f"{run_dir} holds an unfinished run ({', '.join(existing)}). Add --resume to continue it, "
                        f"or --overwrite to start again.")
    if existing:
        raise UserError(f"{run_dir} holds an unfinished run without a checkpoint ({', '.join(existing)}). Add "
                        f"--overwrite to start it again, or choose another --out.")
    return False


def write_config(run_dir: Path, config: dict) -> Path:
    path = Path(run_dir) / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_report(run_dir: Path, report: dict) -> Path:
    """report.json, report.md and README.md (the model card: core.card) of a finished run."""
    from core.card import model_card

    from datetime import datetime, timezone

    run_dir = Path(run_dir)
    report.setdefault("finished_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    (run_dir / "report.md").write_text(render_markdown(report))
    (run_dir / "README.md").write_text(model_card(report), encoding="utf-8")
    return run_dir / REPORT_FILE


def read_report(run_dir: Path) -> dict:
    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished run directory (no {REPORT_FILE}); "
                        f"train one with `verticals train <recipe> --out DIR`.")
    return json.loads(path.read_text())


def render_markdown(report: dict) -> str:
    """report.md for a report dict: the sections, tables and plot captions are in core.report_markdown."""
    from core.report_markdown import render_markdown as render

    return render(report)


# ---------------------------------------------------------------- evaluating a model into / from a run

def is_out_of_scope_set(split, labels: list[str]) -> bool:
    """A set none of whose labels the classifier predicts: scored for out-of-scope detection."""
    return not set(split.labels) & set(labels)


def evaluate_trained(model, data, confidence: dict, run_dir: Path, device: str,
                     validation_logits: np.ndarray | None = None) -> dict:
    """Metrics on validation, test and extra sets (out-of-scope sets get OOS metrics), calibration
    on test, and the confusion-matrix and reliability plots. The test split is encoded once, the
    validation split not at all when the caller gives its logits (finish() has them already)."""
    from core.data import LabelMap
    from core.evaluate import (ClassificationEvaluator, confusion, labelled_metrics, per_class_report,
                               plot_confusion_matrix)

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
    from core.calibrate import expected_calibration_error, plot_reliability, softmax

    before, after = softmax(logits), softmax(logits, temperature)
    plot_reliability({"before (T=1)": (before, y), f"after (T={temperature:.2f})": (after, y)}, plot_path)
    return {"test_ece_before": expected_calibration_error(before, y),
            "test_ece_after": expected_calibration_error(after, y)}


def out_of_scope_metrics(model, in_scope_outputs: tuple[np.ndarray, np.ndarray], out_scope, device: str) -> dict:
    """AUROC and recalls at the model's threshold; `in_scope_outputs` = (logits, embeddings) of the
    in-scope test split, already computed by the caller."""
    from core.ood import auroc

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
    from core.data import source_fingerprint

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
    from dataclasses import fields, replace

    from core.data import Split, partition_label, read_records, records_to_split

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
    from core.recipes import load_run_data

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
    loaded in `runtime` (core.predictor.load_run) unless `model` (a Predictor of it) is given."""
    from core.data import LabelMap
    from core.evaluate import labelled_metrics
    from core.predictor import load_run

    run_dir = Path(run_dir)
    report = read_report(run_dir)
    model = load_run(run_dir, runtime) if model is None else model
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


def predict_texts(model, texts: list[str], top_k: int = 3) -> list[dict]:
    probs = model.predict_proba(texts)
    out = []
    for text, p in zip(texts, probs):
        order = np.argsort(-p)[:top_k]
        out.append({"text": text, "label": model.labels[order[0]], "confidence": round(float(p[order[0]]), 4),
                    "top_k": [{"label": model.labels[i], "probability": round(float(p[i]), 4)} for i in order]})
    return out
