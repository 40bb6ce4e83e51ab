"""Multi-label classification: train, calibrate, threshold and evaluate a per-label sigmoid head.

`train_multilabel(cfg, run_dir)` is the runner of `task: multilabel-classification`
(core.classify.multilabel_config): it reads the data first (core.data.multilabel: every bad row
refused before the run directory is touched), claims the run, builds the ordinary classifier
(core.classify.recipes.build_model: full, LoRA/IA3 or frozen), starts the head from a one-vs-rest
probe, and trains with `fit_multilabel`: BCE-with-logits on multi-hot targets through the shared
engine (core.classify.train.train_steps, the loop single-label `fit` runs too). Then, on the
validation split only: one sigmoid temperature (core.confidence.multilabel.fit_sigmoid_temperature),
each label's threshold (choose_thresholds), and the out-of-scope scorer of the single-label runs
(core.confidence.ood; a multi-label row counts for its first label where a scorer needs classes).
A query is out of scope when no label clears its threshold AND the scorer puts it far from every
intent (core.models.multilabel.MultiLabelHead.out_of_scope). The model is saved as a single-label
one is (safetensors) plus model/multilabel.json; the report has exact-set accuracy, micro/macro
F1 per split, per-label precision/recall/F1 on test, ECE of the per-label probabilities before and
after the temperature, and out-of-scope sets; beside the model, a drift baseline for the support
service's monitor.
Leaves out: the engine loop (core.engine), metric maths (core.evaluation.multilabel), report.md and
the model card (core.classify.multilabel_report), the drift baseline's contents
(core.evaluation.drift_baseline.DriftBaseline.from_multilabel_outputs; saved here from the validation outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from core.classify.multilabel_config import MultiLabelDataConfig, check_multilabel_settings
from core.classify.finish import fit_section, write_run_report
from core.classify.multilabel_report import MULTILABEL_REPORT
from core.classify.recipes import build_model, no_steps, takes_steps
from core.classify.run_data import limit_train
from core.classify.train import FitResult, has_checkpoint, train_steps
from core.confidence.multilabel import choose_thresholds, fit_sigmoid_temperature, sigmoid
from core.confidence.ood import SCORERS, OutOfScopeDetector, auroc
from core.data.catalog import source_fingerprint
from core.data.multilabel import MultiLabelData, MultiLabelSplit, load_multilabel, multi_hot, set_aside_label
from core.data.splits import Split
from core.evaluation.drift_baseline import save_drift_baseline
from core.evaluation.multilabel import label_ece, multilabel_metrics, per_label_report, positive_ece
from core.models.classifier import save_classifier
from core.models.multilabel import MultiLabelHead, init_head_from_ovr_probe
from core.runs.scaffold import RecipeRun


class MultiLabelStep(nn.Module):
    """batch (input_ids, attention_mask, labels = multi-hot rows) -> BCE-with-logits, mean over entries."""

    def __init__(self, model, label_smoothing: float = 0.0):
        super().__init__()
        self.model, self.smoothing = model, label_smoothing
        self.loss = nn.BCEWithLogitsLoss()

    def forward(self, batch: dict):
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        targets = batch["labels"].to(logits.dtype)
        if self.smoothing:
            targets = targets * (1 - self.smoothing) + self.smoothing / 2
        return self.loss(logits, targets)


def evaluate_at_half(model, split: MultiLabelSplit, device: str) -> dict:
    """Validation during training: thresholds 0.5 (the real ones are chosen after training);
    `accuracy` is the exact-set accuracy, so train.metric=accuracy picks checkpoints by it."""
    probs = sigmoid(model.predict_logits(split.texts, device=device))
    metrics = multilabel_metrics(multi_hot(split.label_sets, model.labels), probs >= 0.5, probs)
    return {"accuracy": metrics["exact_set_accuracy"], **metrics}


def fit_multilabel(model, train: MultiLabelSplit, validation: MultiLabelSplit, cfg, *, device: str, run_dir: Path,
                   resume: bool = False, progress: bool = True, metric_sinks: tuple = ()) -> FitResult:
    """Train `model` (a TextClassifier over the multi-label label set) in place with BCE on multi-hot
    targets and leave it at its best validation checkpoint (core.classify.train.train_steps)."""
    targets = multi_hot(train.label_sets, model.labels)
    multi_hot(validation.label_sets, model.labels)  # fail now, not after an epoch, on an unseen label
    return train_steps(model, train.texts, targets, MultiLabelStep(model, cfg.label_smoothing),
                       lambda dev: evaluate_at_half(model, validation, dev), cfg, device=device, run_dir=run_dir,
                       resume=resume, progress=progress, metric_sinks=metric_sinks)


def load_multilabel_run_data(data_cfg: MultiLabelDataConfig, data_dir: str | None = None):
    """(MultiLabelData, rows set aside per split as out-of-scope)."""
    data = load_multilabel(data_cfg.source, root=data_dir, text_column=data_cfg.text_column,
                           labels_column=data_cfg.labels_column, label_column=data_cfg.label_column,
                           encoding=data_cfg.encoding)
    return set_aside_label(data, data_cfg.oos_label) if data_cfg.oos_label else (data, {})


def limit_multilabel_train(split: MultiLabelSplit, n: int) -> MultiLabelSplit:
    """The first `n` rows in core.classify.run_data.limit_train's fixed shuffled order."""
    order = limit_train(Split([str(i) for i in range(len(split))], [""] * len(split)), n).texts
    return split.subset([int(i) for i in order])


def train_multilabel(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                     overwrite: bool = False, progress: bool = True) -> dict:
    """The runner of `task: multilabel-classification` (see the module docstring)."""
    check_multilabel_settings(cfg)
    data, set_aside = load_multilabel_run_data(cfg.data, data_dir)  # before the claim: bad data writes nothing
    train = limit_multilabel_train(data.train, cfg.data.train_limit)
    run = RecipeRun.open(cfg, Path(run_dir), resume=resume, overwrite=overwrite,
                         has_checkpoint=has_checkpoint(Path(run_dir)))
    model = build_model(cfg, data.labels, peft="frozen" if cfg.mode == "probe" else None)
    run.save_config()
    with run.ledger() as ledger:
        probe = {}
        if not run.resuming and (cfg.mode == "probe" or cfg.model.head_init == "probe"):
            model.to(run.device)
            accuracy = init_head_from_ovr_probe(model, model.encode(train.texts, device=run.device),
                                                multi_hot(train.label_sets, data.labels), c=cfg.model.probe_c)
            probe = {"kind": "one-vs-rest logistic regression per label", "c": cfg.model.probe_c,
                     "mean_train_accuracy_per_label": accuracy}
        result = no_steps()
        if cfg.mode == "finetune" and takes_steps(cfg.train):
            result = fit_multilabel(model, train, data.validation, cfg.train, device=run.device, run_dir=run.run_dir,
                                    resume=run.resuming, progress=progress, metric_sinks=(run.tracker.log_row,))
    return finish_multilabel(run, data, set_aside, train, model, result, ledger.cost, {"probe": probe} if probe else {})


def calibrate_and_threshold(model, data: MultiLabelData, train: MultiLabelSplit, cfg, device: str,
                            outputs: tuple | None = None) -> tuple:
    """On validation: the sigmoid temperature (set on the model), each label's threshold and the
    out-of-scope detector (set on the model). `outputs`: the validation (logits, embeddings) when the
    caller has them. Returns (MultiLabelHead, the report's confidence section)."""
    validation = data.validation
    logits, embeddings = outputs if outputs is not None else model.predict_all(validation.texts, device=device)
    y_val = multi_hot(validation.label_sets, model.labels)
    if cfg.model.calibrate:
        model.temperature, note = fit_sigmoid_temperature(logits, y_val)
    else:
        model.temperature, note = 1.0, "calibrate=false: temperature left at 1"
    confidence = {"probabilities": "sigmoid(logits / temperature) per label", "temperature": model.temperature,
                  "temperature_fitted_on": len(validation), **({"temperature_note": note} if note else {})}
    head = MultiLabelHead(list(model.labels), choose_thresholds(sigmoid(logits, model.temperature), y_val)
                          if len(validation) else np.full(len(model.labels), 0.5))
    name = cfg.model.ood_scorer
    if name != "none" and not len(validation):
        return head, confidence | {"ood_note": f"no out-of-scope scorer: ood_scorer={name} needs validation rows"}
    if name != "none":
        first = [model.labels.index(s[0]) for s in train.label_sets]  # a scorer's classes: each row's first label
        train_emb = None if SCORERS[name].needs == "logits" else model.encode(train.texts, device=device)
        model.ood = OutOfScopeDetector.fit(name, train_emb, first, logits, embeddings, temperature=model.temperature,
                                           target_recall=cfg.model.ood_target_recall)
        confidence |= {"ood_scorer": model.ood.name, "ood_threshold": model.ood.threshold,
                       "ood_target_in_scope_recall": model.ood.target_recall,
                       "ood_rule": "no label clears its threshold and the scorer is below its threshold"}
    return head, confidence


def multilabel_outputs(model, head: MultiLabelHead, texts: list[str], device: str) -> dict:
    """logits, calibrated probabilities, in-scope scores (None without a scorer) and the out-of-scope flags."""
    logits, embeddings = model.predict_all(texts, device=device)
    probs = head.probabilities(logits, model.temperature)
    scores = None if model.ood is None else model.ood.scores(logits, embeddings, model.temperature)
    oos = head.out_of_scope(probs, scores, None if model.ood is None else model.ood.threshold)
    return {"logits": logits, "probs": probs, "scores": scores, "out_of_scope": oos}


def evaluate_multilabel(model, head: MultiLabelHead, data: MultiLabelData, device: str) -> dict:
    """metrics per split (validation, test, in-scope extra sets), per-label on test, ECE on test,
    and, for sets of labels the model does not know (out-of-scope), how many are handed over."""
    known, metrics, oos_sets = set(model.labels), {}, {}
    test_out = None
    for name, split in (("validation", data.validation), ("test", data.test), *data.extra.items()):
        if not len(split):
            continue
        out = multilabel_outputs(model, head, split.texts, device)
        if {lab for s in split.label_sets for lab in s} <= known:
            y = multi_hot(split.label_sets, model.labels)
            metrics[name] = multilabel_metrics(y, head.decide(out["probs"]), out["probs"])
            if name == "test":
                test_out, y_test = out, y
        else:
            oos_sets[name] = out
    evaluation = {"metrics": metrics, "labels": list(model.labels), "confidence": {}}
    if test_out is not None:
        evaluation["per_label_test"] = per_label_report(y_test, head.decide(test_out["probs"]), model.labels)
        evaluation["confidence"] = {"test_ece_before": label_ece(sigmoid(test_out["logits"]), y_test),
                                    "test_ece_after": label_ece(test_out["probs"], y_test),
                                    "test_positive_ece_after": positive_ece(test_out["probs"], y_test),
                                    "ece_convention": "every (row, label) entry one binary prediction, 15 bins"}
        for name, out in oos_sets.items():
            evaluation["confidence"][f"out_of_scope_{name}"] = {
                "n_in_scope": int(len(test_out["probs"])), "n_out_of_scope": int(len(out["probs"])),
                "auroc": None if out["scores"] is None else auroc(test_out["scores"], out["scores"]),
                "in_scope_recall": float(1 - test_out["out_of_scope"].mean()),
                "out_of_scope_recall": float(out["out_of_scope"].mean())}
    return evaluation


def finish_multilabel(run: RecipeRun, data: MultiLabelData, set_aside: dict, train: MultiLabelSplit, model,
                      result: FitResult, cost, sections: dict) -> dict:
    """Main process: calibrate and threshold on validation, save, evaluate, write the report."""
    if not run.is_main:
        return run.wait_for_main()
    cfg, run_dir, device = run.cfg, run.run_dir, run.device
    cost.trainable_params, cost.total_params = model.trainable_parameters(), model.total_parameters()
    cost.train_samples, cost.tokens_seen = result.samples_seen, result.tokens_seen
    outputs = model.predict_all(data.validation.texts, device=device)  # calibration and the drift baseline
    head, confidence = calibrate_and_threshold(model, data, train, cfg, device, outputs=outputs)
    save_classifier(model, run_dir / "model")
    head.save(run_dir / "model")
    drift = save_drift_baseline(model, *outputs, run_dir / "model", model_version=run_dir.name, seed=cfg.train.seed,
                                multi_label=head, labels=multi_hot(data.validation.label_sets, model.labels))
    evaluation = evaluate_multilabel(model, head, data, device)
    fingerprint = source_fingerprint(cfg.data.source)
    report = {"data": data.summary() | ({"train_used": len(train)} if len(train) != len(data.train) else {})
              | ({"out_of_scope_rows_set_aside": set_aside} if set_aside else {})
              | ({"source_sha256": fingerprint} if fingerprint else {}),
              "data_card": {k: (data.card or {}).get(k) for k in ("name", "license", "citation", "url")},
              **evaluation, "confidence": confidence | evaluation["confidence"],
              "thresholds": {label: float(t) for label, t in zip(head.labels, head.thresholds)},
              "multi_label": {"head": "one linear layer, a sigmoid per label (BCE-with-logits on multi-hot targets)",
                              "thresholds_chosen_on": f"validation ({len(data.validation)} rows), best F1 per label",
                              "file": "model/multilabel.json"},
              "drift_baseline": drift,
              "fit": fit_section(result, cfg.train.metric),
              **sections}
    return write_run_report(run, report, model=model, cost=cost, result=result,
                            rows=(len(train), len(data.validation)), renderer=MULTILABEL_REPORT)
