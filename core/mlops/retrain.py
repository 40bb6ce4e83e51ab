"""Safe retraining: a challenger from the deployed run and the labels fed back, and the gate that decides.

`retrain(run_dir, feedback, out=...)` reads as the recipes do, top to bottom:
1. `plan_feedback`: the feedback (core.mlops.feedback.FeedbackExample) deduplicated by text (latest
   label wins), texts of the original test split removed (they would leak into the comparison),
   "out_of_scope" rows set aside (below), new labels kept when they have `min_examples_new_label`
   examples (the rest dropped and counted), then a seeded stratified split: `holdout_fraction`
   held out (never trained on, never used for early stopping), and of the rest
   `validation_fraction` for early stopping only. Texts the champion's lineage already trained or
   early-stopped on (`feedback_trained.json` in every retrained run: their sha256, no text) go to
   train and never to the holdout: a fresh split of the grown feedback would otherwise hold out
   rows the champion learnt, and the gate would favour it (the first BANKING77 benchmark run
   kept a challenger that was better on the test split for that reason).
2. Both models are scored before anything trains: the champion (the deployed run's weights) and,
   after training, the challenger, on the original test split (rebuilt from the run's config as
   training built it: core.classify.recipes.prepare_data, so `data_dir` must reach its data) and on the
   feedback holdout, with the same string-label metrics, so new labels count as errors for the
   champion that cannot predict them.
3. The challenger is the champion itself, warm-started: a full fine-tune continues encoder + head,
   LoRA/IA3 the loaded adapter (made trainable again) + head, with `core.classify.train.fit` on
   feedback-train + replayed original training rows (`replay_ratio` per feedback row, stratified
   per label so every old label keeps rows; capped at the training set), early stopping on the
   original validation split + the feedback validation slice. A frozen encoder (probe runs, and
   runs that took no gradient steps) refits its head with the logistic-regression probe on the
   feedback-train + every original training row (a refit from scratch of a convex problem: on a
   subset it would only forget, and encoding the rows is cheap). New labels get head rows by
   imprinting (core.mlops.warm_start.grow_head).
4. core.classify.recipes.finish makes `out` a full run directory (calibration, OOS scorer, report, card,
   cost ledger). The OOS scorer's bank is the original training rows + feedback-train.
   `report["retrain"]` holds the plan's counts, both models' scores, the gate, and the cost.

Out-of-scope feedback: core.confidence.ood's scorers are fitted on in-scope data only (no negatives), so
"out_of_scope" rows never train; all of them are an out-of-scope evaluation set instead, on which
both models' handover rate (out_of_scope_recall at the model's threshold) is reported.
`gate(champion, challenger, margin)` is pure: promote iff the challenger's feedback-holdout
accuracy is higher and its original-test accuracy is at least the champion's minus `margin`.
Feedback with several labels (`a|b`, from "intents": [...]) cannot train a softmax model: a
single-label run skips those rows and counts them (`feedback.several_labels_skipped`, with a hint
to the multi-label recipe; all of them skipped is the "no feedback left" error). A multi-label run
(task multilabel-classification) is retrained by core.mlops.retrain_multilabel, the same protocol
over label sets, gated on micro-F1.
`retrain_and_register` adds the registry (core.mlops.registry): lineage, and promotion when the gate
says so, for either kind of run. Leaves out: reading feedback databases (the app layer), zero-shot runs (no training
rows to replay), and scheduling retrains.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from core.classify.config import build_recipe
from core.classify.finish import finish
from core.classify.multilabel_config import TASK as MULTILABEL_TASK
from core.classify.multilabel_config import build_multilabel_recipe
from core.classify.recipes import no_steps, takes_steps
from core.classify.report import CLASSIFICATION_REPORT
from core.classify.run_data import RunData, prepare_data
from core.classify.train import fit
from core.data.splits import LabelMap
from core.foundation.errors import UserError
from core.mlops.gate import gate, handover_rate, score_model
from core.mlops.registries import open_registry
from core.mlops.registry import ModelRegistry, current_user
from core.mlops.retrain_multilabel import retrain_multilabel
from core.mlops.retrain_plan import (
    RetrainSettings,
    close_retrain,
    concat_splits,
    plan_feedback,
    plan_summary,
    replay_rows,
    require_training_rows,
    say,
    trained_feedback,
)
from core.mlops.warm_start import grow_head, make_trainable, train_schedule
from core.models.classifier import init_head_from_probe, load_classifier
from core.models.predictor import model_dir
from core.runs.rundir import read_report
from core.runs.scaffold import RecipeRun

# ---------------------------------------------------------------- retrain


def run_config(run_dir: Path):
    """(report, recipe config) of a finished classification run that learnt from labelled rows: a
    RecipeConfig, or a MultiLabelRecipeConfig for a multi-label run (core.mlops.retrain_multilabel)."""
    report = read_report(run_dir)
    config = report.get("config") or {}
    task = config.get("task", "classification")
    if task == MULTILABEL_TASK:
        return report, build_multilabel_recipe(config)
    if task != "classification":
        raise UserError(f"{run_dir} is a {task!r} run; retrain takes a text classifier run (classification or "
                        f"{MULTILABEL_TASK})")
    cfg = build_recipe(config)
    if cfg.mode == "zeroshot":
        raise UserError(f"{run_dir} is a zero-shot run: it has no training rows to replay. Train a probe or "
                        f"fine-tuned run on labelled data first (a recipe with mode=probe or mode=finetune)")
    return report, cfg


def retrain(run_dir, feedback, *, out, data_dir: str | None = None, settings: RetrainSettings = RetrainSettings(),
            progress: bool = True, parent: str | None = None, overwrite: bool = False) -> dict:
    """A challenger run in `out`, warm-started from the classifier in `run_dir` and trained on
    `feedback` (core.mlops.feedback.FeedbackExample) + replay; returns its report, whose "retrain"
    section holds both models' scores and the gate. `parent`: how the report names the run
    (default its path). See the module docstring."""
    start = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    if not isinstance(settings, RetrainSettings):
        raise UserError(f"settings must be a RetrainSettings, not {type(settings).__name__}")
    feedback = list(feedback)
    if not feedback:
        raise UserError("no labelled feedback to retrain on: the feedback source holds no labelled texts yet")
    report, cfg = run_config(run_dir)
    if out.resolve() == run_dir.resolve():
        raise UserError(f"--out {out} is the deployed run itself; give a new directory for the challenger")
    if cfg.task == MULTILABEL_TASK:
        return retrain_multilabel(run_dir, cfg, feedback, out=out, data_dir=data_dir, settings=settings,
                                  progress=progress, parent=parent, overwrite=overwrite)
    run = RecipeRun.open(cfg, out, resume=False, overwrite=overwrite, has_checkpoint=False, seed=settings.seed)
    device = run.device
    original = prepare_data(cfg, data_dir)
    model = load_classifier(model_dir(run_dir), merge=False)
    model.mixed_precision = cfg.train.mixed_precision  # champion and challenger score alike, as the report says
    inherited = trained_feedback(run_dir)
    plan = plan_feedback(feedback, model.labels, original.data.test.texts, settings, trained=inherited)
    say(progress, plan_summary(plan.counts))
    require_training_rows(plan)
    say(progress, f"scoring the champion on the original test split ({len(original.data.test)} rows) "
                   f"and the feedback holdout")
    champion = score_model(model, original.data.test, plan, device)
    frozen = model.peft == "frozen" or not takes_steps(cfg.train)
    # a head refit is a fresh convex fit, not a warm start: on a subset of the original rows it would
    # only forget them, and encoding them all costs little, so it replays every one
    replay = original.train if frozen else replay_rows(original.train, round(settings.replay_ratio * len(plan.train)),
                                                        np.random.default_rng(settings.seed))
    mix = concat_splits(plan.train, replay)
    labels = list(model.labels) + plan.new_labels
    extra = dict(original.data.extra) | ({"feedback_holdout": plan.holdout} if len(plan.holdout) else {}) \
        | ({"feedback_out_of_scope": plan.out_of_scope} if len(plan.out_of_scope) else {})
    data = replace(original.data, labels=labels, train=mix,
                   validation=concat_splits(original.data.validation, plan.validation), extra=extra)
    from torch import nn  # lazy: torch costs seconds of start-up

    model.dropout = nn.Dropout(cfg.model.dropout)
    train_cfg = cfg.train if frozen else train_schedule(cfg.train, settings, len(mix), len(original.train))
    run = replace(run, cfg=replace(cfg, train=train_cfg))
    run.save_config()
    say(progress, f"{'refitting the head' if frozen else 'training'} on {len(plan.train)} feedback + "
                   f"{len(replay)} replayed rows; new labels: {', '.join(plan.new_labels) or 'none'}")
    with run.ledger() as ledger:
        if frozen:
            grow_head(model, plan.new_labels, mix.texts, [(label,) for label in mix.labels], device)
            c_value = (report.get("probe") or {}).get("c", cfg.model.probe_c)
            init_head_from_probe(model, mix.texts, LabelMap(labels).encode(mix.labels), c=c_value, device=device)
            result = no_steps()
        else:
            make_trainable(model)
            grow_head(model, plan.new_labels, mix.texts, [(label,) for label in mix.labels], device)
            result = fit(model, mix, data.validation, train_cfg, device=device, run_dir=out, progress=progress)
    challenger = score_model(model, original.data.test, plan, device)
    verdict = gate(champion, challenger, settings.margin)
    section = {"parent": parent or str(run_dir), "feedback": plan.counts, "new_labels": plan.new_labels,
               "dropped_labels_too_few": plan.dropped_labels_too_few, "replay_rows": len(replay),
               "warm_start": "head refit (probe)" if frozen else f"fit from the deployed weights (peft={model.peft})",
               "steps": result.steps, "settings": asdict(settings), "champion": champion, "challenger": challenger,
               "gate": verdict}
    run_data = RunData(data, original.set_aside, mix, scorer_bank=concat_splits(original.train, plan.train))
    report = finish(run, run_data, model, result, ledger.cost, {"retrain": section})
    oos = handover_rate(model, plan.out_of_scope, device)  # the OOS detector exists only now (finish fits it)
    if oos:
        section["challenger"]["feedback_out_of_scope"] = oos
    return close_retrain(out, report, section, cost=ledger.cost, train_seconds=result.train_seconds, started=start,
                         renderer=CLASSIFICATION_REPORT, inherited=inherited, plan=plan, progress=progress)


PROMOTE = ("auto", "never")


def retrain_and_register(run_dir, feedback, *, registry, out, promote: str = "auto", by: str | None = None,
                         data_dir: str | None = None, settings: RetrainSettings = RetrainSettings(),
                         progress: bool = True, overwrite: bool = False) -> dict:
    """`retrain`, then register the challenger in `registry` (a core.mlops.registry.ModelRegistry, or
    its path: core.mlops.registries.open_registry)
    with the deployed run as parent: an empty registry first gets the run as v0001 champion. With
    promote="auto" the challenger becomes champion iff the gate says so (else it is registered as
    rejected); "never" registers it as a candidate. Returns the report plus "registry": {path,
    version, status, parent, champion}."""
    if promote not in PROMOTE:
        raise UserError(f"promote must be one of {', '.join(PROMOTE)}, not {promote!r}")
    by = by or current_user()
    reg = registry if isinstance(registry, ModelRegistry) else open_registry(registry)
    run_config(Path(run_dir))  # refuse a run retrain cannot take before it enters the registry
    parent = reg.find(run_dir)
    if parent is None and reg.versions():
        raise UserError(f"{run_dir} is not a version of the registry {reg.path} (its champion is {reg.champion()}: "
                        f"{reg.champion_path()}); retrain the champion, or give another --registry")
    if parent is None:
        parent = reg.register(run_dir, status="champion", by=by,
                              reason="the deployed run, registered before its first retrain")
        say(progress, f"registered {run_dir} as {parent} (champion) in {reg.path}")
    elif promote == "auto" and parent != reg.champion():
        raise UserError(f"{run_dir} is {parent}, not the champion {reg.champion()}: a challenger is compared with "
                        f"the champion; retrain {reg.champion_path()}, or pass --promote never")
    report = retrain(run_dir, feedback, out=out, data_dir=data_dir, settings=settings, progress=progress,
                     parent=parent, overwrite=overwrite)
    verdict = report["retrain"]["gate"]
    status = "candidate" if promote == "never" else "champion" if verdict["promote"] else "rejected"
    reason = f"gate: {'; '.join(verdict['reasons'])}" + (" (promote=never)" if promote == "never" else "")
    version = reg.register(out, parent=parent, status=status, gate=verdict, reason=reason, by=by)
    report["registry"] = {"path": str(reg.path), "version": version, "status": status, "parent": parent,
                          "champion": reg.champion()}
    return report
