"""Classification recipes: one short function per mode, each read top to bottom.

- `train_probe`: frozen encoder, logistic-regression head; no gradient steps.
- `train_finetune`: a head (probe-initialised or random), then `core.train.fit` on the encoder
  (all of it, or its LoRA/IA3 adapters).
- `train_fewshot`: the contrastive phase on the encoder (core.fewshot), the head, then an
  optional fine-tune.
- `train_zeroshot`: no labelled training data; the head is built from label descriptions.

`run_recipe` picks one by `cfg.mode` from `MODES`. The modes share plain steps (`claim_run`,
`prepare_data`, `build_model`, `init_head`, `finish`), never flags or inheritance. Under a
launcher of N processes (torchrun, accelerate) every process loads the same data, builds the
same model and trains (fit is collective); only the main process writes the run directory
(core.distributed), and after training the others skip calibration and evaluation.
Leaves out: the training loops (core.train, core.fewshot), and the evaluations a run directory
holds (core.report: evaluate_trained for the report; evaluate_run, evaluation_sets and
predict_texts for saved runs, re-exported here for the CLI and tests until they import them there).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.config import DataConfig, to_dict
from core.distributed import barrier, is_main, rank, world_size
from core.errors import UserError
from core.report import evaluate_run, evaluate_trained, evaluation_sets, predict_texts  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from core.data import ClassificationData, Split

# ---------------------------------------------------------------- shared steps


@dataclass(frozen=True)
class RunData:
    """What a run learns from and is evaluated on."""

    data: ClassificationData  # out-of-scope rows set aside
    set_aside: dict[str, int]  # split -> rows set aside as out-of-scope
    train: Split  # the examples the model learns from (after train_limit, shots, ...)
    scorer_bank: Split | None = None  # what embedding OOS scorers are fitted on; None = `train`


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


def takes_steps(train_cfg) -> bool:
    return bool(train_cfg.max_steps or train_cfg.epochs)


def claim_run(cfg, run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[bool, str]:
    """(resuming, device). Every process checks the run directory the same way, so all of them
    refuse it alike; only the main one clears it for --overwrite. The barrier holds the others
    back once a process group exists; before the engine starts one, they touch nothing in the
    directory until `fit`, which synchronises them."""
    from core.report import claim_run_dir
    from core.train import has_checkpoint, seed_everything

    resuming = claim_run_dir(run_dir, to_dict(cfg), resume=resume, overwrite=overwrite,
                             has_checkpoint=has_checkpoint(run_dir), clear=is_main())
    barrier()
    device = resolve_device(cfg.device)
    seed_everything(cfg.train.seed)
    return resuming, device


def prepare_data(cfg, data_dir: str | None) -> RunData:
    """The run's data and the training examples it learns from: train_limit, train_fraction,
    shots and label_names applied in that order, each seeded by train.seed."""
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
    return RunData(data, set_aside, train)


def build_model(cfg, labels: list[str], *, peft: str | None = None):
    """The classifier on `cfg.model.backbone`; `peft` overrides cfg.model.peft (probe, zero-shot)."""
    from core.backbones import load_backbone
    from core.model import LoraSettings, build_classifier

    m = cfg.model
    backbone = load_backbone(m.backbone, max_length=m.max_length or None)
    lora = LoraSettings(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout)
    return build_classifier(backbone, labels, peft=peft or m.peft, lora=lora, dropout=m.dropout)


def save_config(cfg, run_dir: Path) -> None:
    """config.yaml, written once the data and the model are known to load (main process only)."""
    from core.report import write_config

    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, to_dict(cfg))


def init_head(model, run: RunData, cfg, device: str, *, search_c: bool) -> dict:
    """Head from a logistic-regression probe on frozen embeddings (C chosen on validation when
    `search_c`). Returns the report's `probe` section ({} when C was not searched)."""
    from core.data import LabelMap
    from core.model import choose_probe_c, init_head_from_probe

    label_map, validation = LabelMap(run.data.labels), run.data.validation
    c, x = cfg.model.probe_c, model.encode(run.train.texts, device=device)
    probe = {}
    if search_c:
        c, by_c = choose_probe_c(x, label_map.encode(run.train.labels), model.encode(validation.texts, device=device),
                                 label_map.encode(validation.labels))
        probe = {"c": c, "validation_accuracy_by_c": {str(k): v for k, v in by_c.items()}}
    init_head_from_probe(model, run.train.texts, label_map.encode(run.train.labels), c=c, device=device, embeddings=x)
    return probe


def no_steps():
    """The FitResult of a run that takes no gradient steps (probe, zero-shot)."""
    from core.train import FitResult

    return FitResult(steps=0, best_step=0, best_metric=None, stopped_early=False, samples_seen=0,
                     tokens_seen=0, train_seconds=0.0)


def finish(cfg, run_dir: Path, run: RunData, model, result, cost, device: str, sections: dict | None = None,
           tracker=None) -> dict:
    """Main process: calibrate and fit the OOS scorer on validation, save the model and its drift
    baseline (core.drift.DriftBaseline, from the same validation outputs), evaluate,
    plot, write the report, send it to the run's `tracker` (core.tracking), drop the checkpoint,
    and return the report. Other processes wait for it and return only which process they were
    (on another machine they may not see the run directory at all, and before the engine starts
    the process group nothing makes them wait)."""
    from core.data import source_fingerprint
    from core.drift import save_drift_baseline
    from core.evaluate import plot_loss_curve
    from core.model import save_classifier
    from core.report import environment, write_report
    from core.train import MetricsLog

    if not is_main():
        barrier()
        return {"rank": rank(), "world_size": world_size(), "run_dir": str(run_dir), "written_by_rank": 0}
    cost.trainable_params, cost.total_params = model.trainable_parameters(), model.total_parameters()
    cost.train_samples, cost.tokens_seen = result.samples_seen, result.tokens_seen
    bank = run.train if run.scorer_bank is None else run.scorer_bank
    outputs = model.predict_all(run.data.validation.texts, device=device)  # calibration and the drift baseline
    confidence = fit_confidence(model, bank, run.data.validation, cfg, device, outputs=outputs)
    save_classifier(model, run_dir / "model")
    drift = save_drift_baseline(model, *outputs, run_dir / "model", model_version=run_dir.name, seed=cfg.train.seed)
    data, train = run.data, run.train
    fingerprint = source_fingerprint(cfg.data.source)  # lets `verticals eval --data COPY` know its own data
    report = {"config": to_dict(cfg),
              "data": data.summary() | ({"train_used": len(train)} if len(train) != len(data.train) else {})
              | ({"out_of_scope_rows_set_aside": run.set_aside} if run.set_aside else {})
              | ({"source_sha256": fingerprint} if fingerprint else {}),
              "data_card": {k: (data.card or {}).get(k) for k in ("name", "license", "citation", "url")},
              **evaluate_trained(model, data, confidence, run_dir, device, validation_logits=outputs[0]),
              "drift_baseline": drift,
              "fit": {"steps": result.steps, "best_step": result.best_step, "best_metric": result.best_metric,
                      "metric": cfg.train.metric, "stopped_early": result.stopped_early,
                      "train_seconds": round(result.train_seconds, 2)},
              "cost": cost.to_dict(),
              **(sections or {}),
              **({"tracking": tracker.describe()} if tracker is not None and tracker.describe() else {}),
              "environment": environment() | {"device": device}}
    if result.steps:
        plot_loss_curve(MetricsLog.read(run_dir / "metrics.jsonl"), run_dir / "loss_curve.png", metric=cfg.train.metric,
                        train_rows=len(train), validation_rows=len(data.validation))
    write_report(run_dir, report)
    if tracker is not None:
        tracker.finish(report, run_dir, step=result.steps)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)  # the model is saved; free the space
    barrier()
    return report


# ---------------------------------------------------------------- one function per mode


def train_probe(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                overwrite: bool = False, progress: bool = True) -> dict:
    """Frozen encoder + logistic-regression head (C chosen on validation with probe_c_search).
    No gradient steps: the `train:` section is not used and there is no checkpoint to resume."""
    from core.cost import CostLedger, gpus_held
    from core.tracking import open_tracker

    run_dir = Path(run_dir)
    tracker = open_tracker(cfg, run_dir)  # before the claim: a missing extra fails before --overwrite clears
    resuming, device = claim_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    tracker.start(cfg, run_dir, resume=resuming)
    run = prepare_data(cfg, data_dir)
    model = build_model(cfg, run.data.labels, peft="frozen")
    save_config(cfg, run_dir)
    with CostLedger(gpus=gpus_held(device, world_size())) as ledger:
        probe = init_head(model, run, cfg, device, search_c=cfg.model.probe_c_search)
    return finish(cfg, run_dir, run, model, no_steps(), ledger.cost, device, {"probe": probe} if probe else {},
                  tracker=tracker)


def train_finetune(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """A head (from a probe unless head_init=random), then `fit` on the encoder or its adapters;
    resumes from the run's checkpoint (which holds the head, so no probe is fitted again)."""
    from core.cost import CostLedger, gpus_held
    from core.tracking import open_tracker
    from core.train import fit

    run_dir = Path(run_dir)
    tracker = open_tracker(cfg, run_dir)  # before the claim: a missing extra fails before --overwrite clears
    resuming, device = claim_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    tracker.start(cfg, run_dir, resume=resuming)
    run = prepare_data(cfg, data_dir)
    model = build_model(cfg, run.data.labels)
    save_config(cfg, run_dir)
    with CostLedger(gpus=gpus_held(device, world_size())) as ledger:
        probe = {}
        if cfg.model.head_init == "probe" and not resuming:
            probe = init_head(model, run, cfg, device, search_c=cfg.model.probe_c_search)
        result = fit(model, run.train, run.data.validation, cfg.train, device=device, run_dir=run_dir,
                     resume=resuming, progress=progress, metric_sinks=(tracker.log_row,))
    return finish(cfg, run_dir, run, model, result, ledger.cost, device, {"probe": probe} if probe else {},
                  tracker=tracker)


def train_fewshot(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                  overwrite: bool = False, progress: bool = True) -> dict:
    """SetFit-style: the contrastive phase pulls same-label texts together in the encoder, then
    the head (from a probe unless head_init=random), then a fine-tune when `train:` takes steps.
    A resumed run skips both first phases: its checkpoint holds the encoder and head past them."""
    from core.cost import CostLedger, gpus_held
    from core.fewshot import ContrastiveSettings, fit_contrastive
    from core.tracking import open_tracker
    from core.train import fit

    run_dir = Path(run_dir)
    tracker = open_tracker(cfg, run_dir)  # before the claim: a missing extra fails before --overwrite clears
    resuming, device = claim_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    tracker.start(cfg, run_dir, resume=resuming)
    run = prepare_data(cfg, data_dir)
    model = build_model(cfg, run.data.labels)
    save_config(cfg, run_dir)
    c = cfg.contrastive
    settings = ContrastiveSettings(steps=c.contrastive_steps, batch_size=c.contrastive_batch_size,
                                   lr=c.contrastive_lr, scale=c.contrastive_scale, seed=cfg.train.seed)
    with CostLedger(gpus=gpus_held(device, world_size())) as ledger:
        probe = {}
        if not resuming:
            fit_contrastive(model, run.train, settings, device=device, progress=progress)
            if cfg.model.head_init == "probe":
                probe = init_head(model, run, cfg, device, search_c=cfg.model.probe_c_search)
        result = no_steps()
        if takes_steps(cfg.train):
            result = fit(model, run.train, run.data.validation, cfg.train, device=device, run_dir=run_dir,
                         resume=resuming, progress=progress, metric_sinks=(tracker.log_row,))
    return finish(cfg, run_dir, run, model, result, ledger.cost, device, {"probe": probe} if probe else {},
                  tracker=tracker)


def train_zeroshot(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """A classifier from label descriptions, with no labelled training data.

    Each label's descriptions (`zeroshot.descriptions`, a YAML file label -> [sentences]; empty:
    the label's name, "card_arrival" -> "card arrival") are embedded by the frozen encoder and
    averaged into a unit prototype (core.zeroshot.prototypes). cos(text, prototype) / T is a
    linear head on L2-normalised embeddings with weight = prototypes / T and bias 0, so the run
    is an ordinary frozen-encoder classifier that load_classifier, `verticals predict` and the
    router read unchanged. The classifier always normalises its embeddings: a backbone that
    does not (its `normalize` is false) gets `normalize` set on the classifier, saved in
    classifier.json, so the head sees cosines either way. T starts at zeroshot.temperature;
    labelled validation rows, when the data has them, are used only to calibrate it (the
    usual temperature scaling, which rescales T) and the out-of-scope threshold, and test
    rows only to evaluate: the report's `zeroshot` section says which. Embedding OOS scorers
    are fitted on the description embeddings, the only texts the head was built from.
    """
    import torch

    from core.cost import CostLedger, gpus_held
    from core.data import Split
    from core.tracking import open_tracker
    from core.zeroshot import prototypes

    run_dir = Path(run_dir)
    tracker = open_tracker(cfg, run_dir)  # before the claim: a missing extra fails before --overwrite clears
    resuming, device = claim_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    tracker.start(cfg, run_dir, resume=resuming)
    data, set_aside = load_run_data(cfg.data, data_dir)
    settings = cfg.zeroshot
    descriptions = label_descriptions(settings.descriptions, data.labels)
    model = build_model(cfg, data.labels, peft="frozen")
    model.normalize = True  # cosines whatever the backbone does (see above)
    save_config(cfg, run_dir)
    with CostLedger(gpus=gpus_held(device, world_size())) as ledger:
        protos = prototypes([model.encode(descriptions[label], device=device) for label in model.labels])
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(protos / settings.temperature))
            model.head.bias.zero_()
        model.head.requires_grad_(False)  # nothing trains: the report's cost counts 0 trainable parameters
    texts = [t for label in model.labels for t in descriptions[label]]
    bank = Split(texts, [label for label in model.labels for _ in descriptions[label]])
    run = RunData(data, set_aside, Split([], []), scorer_bank=bank)
    uses = [u for u, on in (("calibrate the temperature", cfg.model.calibrate),
                            ("set the out-of-scope threshold", cfg.model.ood_scorer != "none")) if on]
    n_val = len(data.validation)
    labelled = (f"none for the head; {n_val} labelled validation rows only {' and '.join(uses)}" if n_val and uses
                else "none (the temperature stays at zeroshot.temperature)")
    section = {"descriptions": settings.descriptions or "label names", "descriptions_per_label":
               {label: len(descriptions[label]) for label in model.labels}, "temperature": settings.temperature,
               "probabilities": "softmax(cos(text, prototype) / (zeroshot.temperature * confidence.temperature))",
               "labelled_data_used": labelled}
    return finish(cfg, run_dir, run, model, no_steps(), ledger.cost, device, {"zeroshot": section}, tracker=tracker)


def label_descriptions(path: str, labels: list[str]) -> dict[str, list[str]]:
    """label -> its descriptions: from the YAML file at `path` (label -> a sentence or a list of
    them; every label of the data needs one, and no other label may appear), or, for an empty
    `path`, each label's name with `_`/`-` read as spaces."""
    from core.config import read_yaml_mapping
    from core.data import Split
    from core.fewshot import with_label_name_examples

    if not path:
        return {label: [name] for label, name in zip(labels, with_label_name_examples(Split([], []), labels).texts)}
    shape = "label -> a description or a list of descriptions"
    raw = read_yaml_mapping(Path(path), "zeroshot.descriptions file", shape)
    raw = {str(k): [v] if isinstance(v, str) else v for k, v in raw.items()}
    missing, unknown = [lab for lab in labels if lab not in raw], sorted(set(raw) - set(labels))
    if missing or unknown:
        raise UserError(f"zeroshot.descriptions {path} must describe exactly the data's {len(labels)} labels: "
                        + (f"missing {', '.join(missing[:5])}" if missing else "")
                        + ("; " if missing and unknown else "") + (f"unknown {', '.join(unknown[:5])}" if unknown else "")
                        + f" (labels: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''})")
    for label in labels:
        texts = raw[label]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise UserError(f"zeroshot.descriptions {path}: label '{label}' needs one or more non-empty sentences "
                            f"({shape}); got {texts!r}")
    return {label: list(raw[label]) for label in labels}


MODES = {"probe": train_probe, "finetune": train_finetune, "fewshot": train_fewshot, "zeroshot": train_zeroshot}


def run_recipe(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
               overwrite: bool = False, progress: bool = True) -> dict:
    """Train `cfg` into `run_dir` with its mode's function. An existing run there is refused unless
    `overwrite` (start again) or `resume` (continue from its checkpoint, with the same settings):
    core.report.claim_run_dir."""
    if cfg.mode not in MODES:
        raise UserError(f"bad value for 'mode': {cfg.mode!r}; choose one of {', '.join(MODES)}")
    return MODES[cfg.mode](cfg, Path(run_dir), data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress)


run_classification = run_recipe  # the old name, until the CLI, benchmarks and tests move


# ---------------------------------------------------------------- after training (main process)


def fit_confidence(model, train, validation, cfg, device: str, *, outputs=None) -> dict:
    """Temperature scaling on validation logits (bounded and shrunk toward 1, with a note when the
    validation split is too small or error-free to say more: core.calibrate.fit_temperature), then
    the out-of-scope scorer: fitted on `train` embeddings, thresholded to keep `ood_target_recall`
    of in-scope validation queries (skipped, with a note, when there is no validation split).
    `outputs`: the validation (logits, embeddings) when the caller already has them."""
    from core.calibrate import fit_temperature
    from core.data import LabelMap
    from core.ood import SCORERS, OutOfScopeDetector

    labels = LabelMap(model.labels)
    logits, embeddings = outputs if outputs is not None else model.predict_all(validation.texts, device=device)
    y_val = np.asarray(labels.encode(validation.labels))
    if cfg.model.calibrate:
        fitted = fit_temperature(logits, y_val)
        model.temperature = fitted.temperature
        out = {"temperature": fitted.temperature, "temperature_fitted_on": fitted.n,
               **({"temperature_note": fitted.note} if fitted.note else {})}
    else:
        model.temperature = 1.0
        out = {"temperature": 1.0, "temperature_note": "calibrate=false: temperature left at 1"}
    name = cfg.model.ood_scorer
    if name != "none" and not len(validation):
        return out | {"ood_note": f"no out-of-scope scorer: ood_scorer={name} needs validation rows to set its threshold"}
    if name != "none":
        train_emb = None if SCORERS[name].needs == "logits" else model.encode(train.texts, device=device)
        model.ood = OutOfScopeDetector.fit(name, train_emb, labels.encode(train.labels), logits, embeddings,
                                           temperature=model.temperature, target_recall=cfg.model.ood_target_recall)
        out |= {"ood_scorer": model.ood.name, "ood_threshold": model.ood.threshold,
                "ood_target_in_scope_recall": model.ood.target_recall}
    return out
