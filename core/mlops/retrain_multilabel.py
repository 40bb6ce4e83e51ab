"""Retraining a multi-label run (`task: multilabel-classification`) from feedback, safely.

The single-label protocol (core.mlops.retrain), with label sets where it has labels:
1. `plan_feedback(..., multi_label=True)`: a feedback label `a|b` (what POST /v1/feedback stores
   for "intents": [...]) is the set {a, b}, a plain `a` the set {a}; a name the champion does not
   know is a new label when at least `min_examples_new_label` rows hold it (a row with a dropped
   name is dropped whole); out-of-scope rows, the holdout, the early-stopping slice and the
   lineage's trained texts as in the single-label plan.
2. The champion is scored with its own thresholds and temperature before anything trains, the
   challenger with its refitted ones after, on the original test split and the feedback holdout
   (core.mlops.gate.label_set_scores: a new label the champion cannot predict is a missed label).
3. The challenger is the champion, warm-started: new labels get head rows by imprinting
   (core.mlops.warm_start.grow_head: a row belongs to every label it holds), then
   core.classify.multilabel.fit_multilabel (BCE on multi-hot targets through the shared engine, what
   train_multilabel runs) on feedback-train + replayed original training rows (`replay_ratio` per
   feedback row, stratified by first label), early stopping on the original validation split + the
   feedback validation slice. A frozen encoder (mode=probe, or no steps) refits its head with the
   one-vs-rest probe on feedback-train + every original training row.
4. core.classify.multilabel.finish_multilabel refits the sigmoid temperature, each label's
   threshold and the out-of-scope scorer on that same validation (original + feedback slice; the
   holdout stays out, for the gate) and writes the run directory.
The gate (core.mlops.gate.gate) compares micro-F1, not exact-set accuracy: feedback holdouts are a
few dozen rows, and exact-set accuracy moves in steps of one row (a row with a right and a wrong
label scores 0, so ties, which never promote, are common), while micro-F1 counts every (row,
label) decision: a challenger that learnt the new intent on "a|new" rows shows it even when it
misses `a`. Exact-set accuracy is reported beside it. `margin` is a drop in original-test micro-F1.
Leaves out: the registry (core.mlops.retrain.retrain_and_register takes either kind of run).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from core.classify.multilabel import (
    finish_multilabel,
    fit_multilabel,
    limit_multilabel_train,
    load_multilabel_run_data,
    multilabel_outputs,
)
from core.classify.multilabel_report import MULTILABEL_REPORT
from core.classify.recipes import no_steps, takes_steps
from core.data.multilabel import MultiLabelSplit, multi_hot, parse_label_list, split_multilabel
from core.data.splits import Split
from core.mlops.gate import gate, label_set_scores
from core.mlops.retrain_plan import (
    FeedbackPlan,
    RetrainSettings,
    close_retrain,
    plan_feedback,
    plan_summary,
    require_training_rows,
    say,
    trained_feedback,
)
from core.mlops.warm_start import grow_head, make_trainable, train_schedule
from core.models.classifier import load_classifier
from core.models.multilabel import MultiLabelHead, init_head_from_ovr_probe, load_multilabel_head
from core.models.predictor import model_dir
from core.runs.scaffold import RecipeRun

GATE_METRIC = "micro_f1"


def as_label_sets(split: Split) -> MultiLabelSplit:
    """A plan's split (labels `a|b`) as label sets."""
    return MultiLabelSplit(list(split.texts), [parse_label_list(label, "feedback label") for label in split.labels])


def join_label_sets(*parts: MultiLabelSplit) -> MultiLabelSplit:
    return MultiLabelSplit([t for p in parts for t in p.texts], [s for p in parts for s in p.label_sets])


def replay_label_sets(train: MultiLabelSplit, n: int, rng: np.random.Generator) -> MultiLabelSplit:
    """About `n` original training rows, stratified by each row's first label, capped at the split."""
    if n <= 0:
        return MultiLabelSplit([], [])
    return train if n >= len(train) else split_multilabel(train, n / len(train), rng)[1]


def multilabel_scores(model, head: MultiLabelHead, split: MultiLabelSplit, device: str) -> dict:
    """label_set_scores of the model's thresholded decisions on `split`; {"n": 0} when empty."""
    if not len(split):
        return {"n": 0}
    out = multilabel_outputs(model, head, split.texts, device)
    return label_set_scores(split.label_sets, head.decide(out["probs"]), list(model.labels))


def handover(model, head: MultiLabelHead, split: MultiLabelSplit, device: str) -> dict | None:
    """Share of `split` (out-of-scope feedback) the model hands over (MultiLabelHead.out_of_scope)."""
    if not len(split):
        return None
    return {"n": len(split), "out_of_scope_recall": float(multilabel_outputs(model, head, split.texts,
                                                                             device)["out_of_scope"].mean())}


def score_multilabel(model, head: MultiLabelHead, test: MultiLabelSplit, plan: FeedbackPlan, device: str) -> dict:
    out = {"test": multilabel_scores(model, head, test, device),
           "feedback_holdout": multilabel_scores(model, head, as_label_sets(plan.holdout), device)}
    oos = handover(model, head, as_label_sets(plan.out_of_scope), device)
    return out | ({"feedback_out_of_scope": oos} if oos else {})


def retrain_multilabel(run_dir: Path, cfg, feedback: list, *, out: Path, data_dir: str | None,
                       settings: RetrainSettings, progress: bool, parent: str | None, overwrite: bool) -> dict:
    """A challenger of the multi-label run in `run_dir` (its MultiLabelRecipeConfig `cfg`) in `out`;
    returns its report, whose "retrain" section holds both models' scores and the gate (module docstring)."""
    from torch import nn  # lazy: torch costs seconds of start-up

    start = time.perf_counter()
    run = RecipeRun.open(cfg, out, resume=False, overwrite=overwrite, has_checkpoint=False, seed=settings.seed)
    device = run.device
    original, set_aside = load_multilabel_run_data(cfg.data, data_dir)
    original_train = limit_multilabel_train(original.train, cfg.data.train_limit)
    model = load_classifier(model_dir(run_dir), merge=False)
    model.mixed_precision = cfg.train.mixed_precision  # champion and challenger score alike, as the report says
    inherited = trained_feedback(run_dir)
    plan = plan_feedback(feedback, model.labels, original.test.texts, settings, trained=inherited, multi_label=True)
    say(progress, plan_summary(plan.counts))
    require_training_rows(plan)
    champion = score_multilabel(model, load_multilabel_head(model_dir(run_dir)), original.test, plan, device)
    frozen = model.peft == "frozen" or not takes_steps(cfg.train)
    # a head refit is a fresh convex fit: it replays every original row (see core.mlops.retrain)
    replay = original_train if frozen else replay_label_sets(
        original_train, round(settings.replay_ratio * len(plan.train)), np.random.default_rng(settings.seed))
    mix = join_label_sets(as_label_sets(plan.train), replay)
    labels = list(model.labels) + plan.new_labels
    validation = join_label_sets(original.validation, as_label_sets(plan.validation))
    extra = dict(original.extra) | ({"feedback_holdout": as_label_sets(plan.holdout)} if len(plan.holdout) else {}) \
        | ({"feedback_out_of_scope": as_label_sets(plan.out_of_scope)} if len(plan.out_of_scope) else {})
    data = replace(original, labels=labels, train=mix, validation=validation, extra=extra)
    model.dropout = nn.Dropout(cfg.model.dropout)
    train_cfg = cfg.train if frozen else train_schedule(cfg.train, settings, len(mix), len(original_train))
    run = replace(run, cfg=replace(cfg, train=train_cfg))
    run.save_config()
    say(progress, f"{'refitting the head' if frozen else 'training'} on {len(plan.train)} feedback + "
                   f"{len(replay)} replayed rows; new labels: {', '.join(plan.new_labels) or 'none'}")
    with run.ledger() as ledger:
        grow_head(model, plan.new_labels, mix.texts, mix.label_sets, device)
        if frozen:
            init_head_from_ovr_probe(model, model.encode(mix.texts, device=device), multi_hot(mix.label_sets, labels),
                                     c=cfg.model.probe_c)
            result = no_steps()
        else:
            make_trainable(model)
            result = fit_multilabel(model, mix, validation, train_cfg, device=device, run_dir=out, progress=progress)
    section = {"parent": parent or str(run_dir), "feedback": plan.counts, "new_labels": plan.new_labels,
               "dropped_labels_too_few": plan.dropped_labels_too_few, "replay_rows": len(replay),
               "warm_start": "head refit (one-vs-rest probe)" if frozen
               else f"fit_multilabel from the deployed weights (peft={model.peft})",
               "steps": result.steps, "settings": asdict(settings), "champion": champion,
               "gate_metric": GATE_METRIC}
    report = finish_multilabel(run, data, set_aside, mix, model, result, ledger.cost, {"retrain": section})
    # thresholds, temperature and the OOS scorer exist only now: finish_multilabel refits them on validation
    section["challenger"] = score_multilabel(model, load_multilabel_head(out / "model"), original.test, plan, device)
    section["gate"] = gate(champion, section["challenger"], settings.margin, GATE_METRIC)
    return close_retrain(out, report, section, cost=ledger.cost, train_seconds=result.train_seconds, started=start,
                         renderer=MULTILABEL_REPORT, inherited=inherited, plan=plan, progress=progress)
