"""The classification recipe: config -> data -> backbone -> model -> fit -> evaluate -> run dir.

Reads top to bottom; every classification recipe YAML (support intents, finance sentiment, ...)
runs through `run_classification`. Also `evaluate_run` (on the run's own held-out split, rebuilt
through the same `load_run_data`, or on another file) and `predict_texts` for saved runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.config import DataConfig, RecipeConfig, to_dict
from core.errors import UserError

if TYPE_CHECKING:
    from core.data import Split


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible to torch; use device=cpu or device=auto")
    return name


def limit_train(split, n: int):
    """The first `n` training examples in a fixed shuffled order (seed 0), so a quick run still
    sees most labels even when the file is sorted by label."""
    from core.data import Split

    if not n or n >= len(split):
        return split
    order = np.random.default_rng(0).permutation(len(split))[:n]
    return Split([split.texts[i] for i in order], [split.labels[i] for i in order])


def load_run_data(data_cfg: DataConfig, data_dir: str | None = None):
    """The splits a run trains and is evaluated on: the loader (its split function and seed) and
    the out-of-scope rows set aside; `evaluate_run` rebuilds a saved run's splits through here too.
    Returns (ClassificationData, rows set aside per split)."""
    from core.data import load_classification, set_aside_out_of_scope

    data = load_classification(data_cfg.source, root=data_dir, text_column=data_cfg.text_column,
                               label_column=data_cfg.label_column, encoding=data_cfg.encoding)
    return set_aside_out_of_scope(data, data_cfg.oos_label) if data_cfg.oos_label else (data, {})


def run_classification(cfg: RecipeConfig, run_dir: Path, *, data_dir: str | None = None,
                       resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train `cfg` into `run_dir`. An existing run there is refused unless `overwrite` (start
    again) or `resume` (continue from its checkpoint, with the same settings): core.report.claim_run_dir."""
    from core.backbones import load_backbone
    from core.cost import CostLedger
    from core.data import LabelMap, source_fingerprint
    from core.evaluate import plot_loss_curve
    from core.model import LoraSettings, build_classifier, choose_probe_c, init_head_from_probe, save_classifier
    from core.report import claim_run_dir, environment, write_config, write_report
    from core.train import MetricsLog, fit, has_checkpoint, seed_everything

    run_dir = Path(run_dir)
    resuming = claim_run_dir(run_dir, to_dict(cfg), resume=resume, overwrite=overwrite,
                             has_checkpoint=has_checkpoint(run_dir))
    device = resolve_device(cfg.device)
    seed_everything(cfg.train.seed)
    data, set_aside = load_run_data(cfg.data, data_dir)
    train = limit_train(data.train, cfg.data.train_limit)
    if cfg.data.train_fraction < 1.0:
        from core.data import stratified_split

        train = stratified_split(train, cfg.data.train_fraction, np.random.default_rng(cfg.train.seed))[1]
    if cfg.data.shots:
        from core.fewshot import sample_per_class

        train = sample_per_class(train, cfg.data.shots, np.random.default_rng(cfg.train.seed))
    if cfg.data.label_names:
        from core.fewshot import with_label_name_examples

        train = with_label_name_examples(train, data.labels)
    backbone = load_backbone(cfg.model.backbone, max_length=cfg.model.max_length or None)
    lora = LoraSettings(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout)
    model = build_classifier(backbone, data.labels, peft=cfg.model.peft, lora=lora, dropout=cfg.model.dropout)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, to_dict(cfg))

    with CostLedger() as ledger:
        if cfg.contrastive.contrastive_steps and not resuming:
            from core.fewshot import ContrastiveSettings, fit_contrastive

            c = cfg.contrastive
            fit_contrastive(model, train, ContrastiveSettings(
                steps=c.contrastive_steps, batch_size=c.contrastive_batch_size, lr=c.contrastive_lr,
                scale=c.contrastive_scale, seed=cfg.train.seed), device=device, progress=progress)
        probe = {}
        if cfg.model.head_init == "probe" and not resuming:
            label_map = LabelMap(data.labels)
            c, x = cfg.model.probe_c, model.encode(train.texts, device=device)
            if cfg.model.probe_c_search:
                c, by_c = choose_probe_c(x, label_map.encode(train.labels), model.encode(data.validation.texts, device=device),
                                         label_map.encode(data.validation.labels))
                probe = {"c": c, "validation_accuracy_by_c": {str(k): v for k, v in by_c.items()}}
            init_head_from_probe(model, train.texts, label_map.encode(train.labels), c=c, device=device, embeddings=x)
        result = fit(model, train, data.validation, cfg.train, device=device, run_dir=run_dir,
                     resume=resuming, progress=progress)
    cost = ledger.cost
    cost.trainable_params, cost.total_params = model.trainable_parameters(), model.total_parameters()
    cost.train_samples, cost.tokens_seen = result.samples_seen, result.tokens_seen

    confidence = fit_confidence(model, train, data.validation, cfg, device)
    save_classifier(model, run_dir / "model")
    fingerprint = source_fingerprint(cfg.data.source)  # lets `verticals eval --data COPY` know its own data
    report = {"config": to_dict(cfg),
              "data": data.summary() | ({"train_used": len(train)} if len(train) != len(data.train) else {})
              | ({"out_of_scope_rows_set_aside": set_aside} if set_aside else {})
              | ({"source_sha256": fingerprint} if fingerprint else {}),
              "data_card": {k: (data.card or {}).get(k) for k in ("name", "license", "citation", "url")},
              **evaluate_trained(model, data, confidence, run_dir, device),
              "fit": {"steps": result.steps, "best_step": result.best_step, "best_metric": result.best_metric,
                      "metric": cfg.train.metric, "stopped_early": result.stopped_early,
                      "train_seconds": round(result.train_seconds, 2)},
              "cost": cost.to_dict(),
              **({"probe": probe} if probe else {}),
              "environment": environment() | {"device": device}}
    plot_loss_curve(MetricsLog.read(run_dir / "metrics.jsonl"), run_dir / "loss_curve.png", metric=cfg.train.metric)
    write_report(run_dir, report)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # the model is saved; free the space
    return report


def is_out_of_scope_set(split, labels: list[str]) -> bool:
    """A set none of whose labels the classifier predicts: scored for out-of-scope detection."""
    return not set(split.labels) & set(labels)


def evaluate_trained(model, data, confidence: dict, run_dir: Path, device: str) -> dict:
    """Metrics on validation, test and extra sets (out-of-scope sets get OOS metrics), calibration
    on test, and the confusion-matrix and reliability plots. The test split is encoded once."""
    from core.data import LabelMap
    from core.evaluate import (ClassificationEvaluator, confusion, labelled_metrics, per_class_report,
                               plot_confusion_matrix)

    metrics = {"validation": ClassificationEvaluator(data.validation.texts, data.validation.labels)(model, device)}
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


def fit_confidence(model, train, validation, cfg: RecipeConfig, device: str) -> dict:
    """Temperature scaling on validation logits (bounded and shrunk toward 1, with a note when the
    validation split is too small or error-free to say more: core.calibrate.fit_temperature), then
    the out-of-scope scorer: fitted on training embeddings, thresholded to keep `ood_target_recall`
    of in-scope validation queries."""
    from core.calibrate import fit_temperature
    from core.data import LabelMap
    from core.ood import SCORERS, fit_scorer, in_scope_scores, threshold_for_recall

    labels = LabelMap(model.labels)
    logits, embeddings = model.predict_all(validation.texts, device=device)
    y_val = np.asarray(labels.encode(validation.labels))
    if cfg.model.calibrate:
        fitted = fit_temperature(logits, y_val)
        model.temperature = fitted.temperature
        out = {"temperature": fitted.temperature, "temperature_fitted_on": fitted.n,
               **({"temperature_note": fitted.note} if fitted.note else {})}
    else:
        model.temperature = 1.0
        out = {"temperature": 1.0, "temperature_note": "calibrate=false: temperature left at 1"}
    if cfg.model.ood_scorer != "none":
        name = cfg.model.ood_scorer
        train_emb = None if SCORERS[name].needs == "logits" else model.encode(train.texts, device=device)
        scorer = fit_scorer(name, train_emb, labels.encode(train.labels), logits, embeddings, model.temperature)
        val_scores = in_scope_scores(scorer, logits, embeddings, model.temperature)
        threshold = threshold_for_recall(val_scores, cfg.model.ood_target_recall)
        model.ood = (scorer, threshold, cfg.model.ood_target_recall)
        out |= {"ood_scorer": scorer.name, "ood_threshold": threshold,
                "ood_target_in_scope_recall": cfg.model.ood_target_recall}
    return out


def calibration_on_test(logits: np.ndarray, y: np.ndarray, temperature: float, plot_path: Path) -> dict:
    from core.calibrate import expected_calibration_error, plot_reliability, softmax

    before, after = softmax(logits), softmax(logits, temperature)
    plot_reliability({"before (T=1)": (before, y), f"after (T={temperature:.2f})": (after, y)}, plot_path)
    return {"test_ece_before": expected_calibration_error(before, y),
            "test_ece_after": expected_calibration_error(after, y)}


def out_of_scope_metrics(model, in_scope_outputs: tuple[np.ndarray, np.ndarray], out_scope, device: str) -> dict:
    """AUROC and recalls at the model's threshold; `in_scope_outputs` = (logits, embeddings) of the
    in-scope test split, already computed by the caller."""
    from core.ood import auroc, in_scope_scores

    scorer, threshold, _ = model.ood
    in_scores = in_scope_scores(scorer, *in_scope_outputs, model.temperature)
    out_scores = in_scope_scores(scorer, *model.predict_all(out_scope.texts, device=device), model.temperature)
    return {"n_in_scope": len(in_scores), "n_out_of_scope": len(out_scores),
            "auroc": auroc(in_scores, out_scores),
            "in_scope_recall": float((in_scores >= threshold).mean()),
            "out_of_scope_recall": float((out_scores < threshold).mean())}


@dataclass(frozen=True)
class EvaluationSets:
    """What `verticals eval` scores: in-scope rows, out-of-scope sets, and a sentence saying which."""

    description: str  # e.g. "test split of data.csv: 96 rows"
    split: str | None  # None: every row of a file the run was not trained on
    in_scope: "Split"
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
                 split: str | None = None, columns: dict[str, str] | None = None) -> dict:
    """Metrics of a saved run on the rows `evaluation_sets` picks (by default its own test split),
    with out-of-scope AUROC and recalls for the out-of-scope sets beside them."""
    from core.data import LabelMap
    from core.evaluate import labelled_metrics
    from core.model import load_classifier
    from core.report import read_report

    run_dir = Path(run_dir)
    report = read_report(run_dir)
    model = load_classifier(run_dir / "model")
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
