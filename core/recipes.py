"""The classification recipe: config -> data -> backbone -> model -> fit -> evaluate -> run dir.

Reads top to bottom; every classification recipe YAML (support intents, finance sentiment, ...)
runs through `run_classification`. Also `evaluate_run` and `predict_run` for saved runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from core.config import RecipeConfig, to_dict
from core.errors import UserError


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


def run_classification(cfg: RecipeConfig, run_dir: Path, *, data_dir: str | None = None,
                       resume: bool = False, progress: bool = True) -> dict:
    from core.backbones import load_backbone
    from core.cost import CostLedger
    from core.data import LabelMap, load_classification
    from core.evaluate import plot_loss_curve
    from core.model import LoraSettings, build_classifier, choose_probe_c, init_head_from_probe, save_classifier
    from core.report import environment, write_config, write_report
    from core.train import MetricsLog, fit, has_checkpoint, seed_everything

    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    seed_everything(cfg.train.seed)
    data = load_classification(cfg.data.source, root=data_dir, text_column=cfg.data.text_column,
                               label_column=cfg.data.label_column, encoding=cfg.data.encoding)
    set_aside = {}
    if cfg.data.oos_label:
        from core.data import set_aside_out_of_scope

        data, set_aside = set_aside_out_of_scope(data, cfg.data.oos_label)
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

    resuming = resume and has_checkpoint(run_dir)
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
                     resume=resume, progress=progress)
    cost = ledger.cost
    cost.trainable_params, cost.total_params = model.trainable_parameters(), model.total_parameters()
    cost.train_samples, cost.tokens_seen = result.samples_seen, result.tokens_seen

    confidence = fit_confidence(model, train, data.validation, cfg, device)
    save_classifier(model, run_dir / "model")
    report = {"config": to_dict(cfg),
              "data": data.summary() | ({"train_used": len(train)} if len(train) != len(data.train) else {})
              | ({"out_of_scope_rows_set_aside": set_aside} if set_aside else {}),
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


def evaluate_trained(model, data, confidence: dict, run_dir: Path, device: str) -> dict:
    """Metrics on validation, test and extra sets (out-of-scope sets get OOS metrics), calibration
    on test, and the confusion-matrix and reliability plots. The test split is encoded once."""
    from core.data import LabelMap
    from core.evaluate import (ClassificationEvaluator, classification_metrics, confusion, per_class_report,
                               plot_confusion_matrix)

    metrics = {"validation": ClassificationEvaluator(data.validation.texts, data.validation.labels)(model, device)}
    logits, embeddings = model.predict_all(data.test.texts, device=device)
    y_test = np.asarray(LabelMap(model.labels).encode(data.test.labels))
    y_pred = logits.argmax(axis=1)  # temperature scaling never changes the argmax
    metrics["test"] = {"n": len(y_test), **classification_metrics(y_test, y_pred)}
    confidence = confidence | calibration_on_test(logits, y_test, model.temperature, run_dir / "reliability.png")
    skipped = {}
    for name, split in data.extra.items():
        unknown = set(split.labels) - set(model.labels)
        if unknown == set(split.labels) and model.ood is not None:
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
    """Temperature scaling on validation logits, then the out-of-scope scorer: fitted on training
    embeddings, thresholded to keep `ood_target_recall` of in-scope validation queries."""
    from core.calibrate import fit_temperature
    from core.data import LabelMap
    from core.ood import SCORERS, fit_scorer, in_scope_scores, threshold_for_recall

    labels = LabelMap(model.labels)
    logits, embeddings = model.predict_all(validation.texts, device=device)
    y_val = np.asarray(labels.encode(validation.labels))
    model.temperature = fit_temperature(logits, y_val) if cfg.model.calibrate else 1.0
    out = {"temperature": model.temperature}
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


def evaluate_run(run_dir: Path, data_spec: str | None = None, *, data_dir: str | None = None,
                 split: str = "test") -> dict:
    """Metrics of a saved run on a dataset spec (its `split`) or on every row of a CSV/JSONL file."""
    from core.data import load_classification, partition_label, read_records, records_to_split
    from core.evaluate import ClassificationEvaluator
    from core.model import load_classifier
    from core.report import read_report

    run_dir = Path(run_dir)
    report = read_report(run_dir)
    cfg = report["config"]["data"]
    model = load_classifier(run_dir / "model")
    spec = data_spec or cfg["source"]
    path = Path(spec).expanduser()
    if path.is_file():
        rows = read_records(path, cfg["encoding"])
        data_split = records_to_split(rows, path, cfg["text_column"], cfg["label_column"])
    else:
        data = load_classification(spec, root=data_dir, text_column=cfg["text_column"],
                                   label_column=cfg["label_column"], encoding=cfg["encoding"])
        splits = {"train": data.train, "validation": data.validation, "test": data.test, **data.extra}
        if split not in splits:
            raise UserError(f"dataset {spec} has no split '{split}'; choose one of {', '.join(splits)}")
        data_split = splits[split]
    oos_label = cfg.get("oos_label", "")
    out_scope = None
    if oos_label:  # rows labelled out-of-scope: scored by the out-of-scope detector, not the classifier
        data_split, out_scope = partition_label(data_split, oos_label)
        if len(out_scope) and not len(data_split):
            raise UserError(f"every row is labelled '{oos_label}': give in-scope rows too, to measure how well "
                            f"out-of-scope ones are told apart")
    result = ClassificationEvaluator(data_split.texts, data_split.labels)(model, details=True)
    if out_scope is not None and len(out_scope) and model.ood is not None:
        result["out_of_scope"] = out_of_scope_metrics(model, model.predict_all(data_split.texts), out_scope, "cpu")
    return result


def predict_texts(model, texts: list[str], top_k: int = 3) -> list[dict]:
    probs = model.predict_proba(texts)
    out = []
    for text, p in zip(texts, probs):
        order = np.argsort(-p)[:top_k]
        out.append({"text": text, "label": model.labels[order[0]], "confidence": round(float(p[order[0]]), 4),
                    "top_k": [{"label": model.labels[i], "probability": round(float(p[i]), 4)} for i in order]})
    return out
