"""Classification recipes: one short function per mode, each read top to bottom.

- `train_probe`: frozen encoder, logistic-regression head; no gradient steps.
- `train_finetune`: a head (probe-initialised or random), then `core.classify.train.fit` on the
  encoder (all of it, or its LoRA/IA3 adapters).
- `train_fewshot`: the contrastive phase on the encoder (core.classify.fewshot), the head, then an
  optional fine-tune.
- `train_zeroshot`: no labelled training data; the head is built from label descriptions.
- `train_static`: a static-embedding model distilled from the backbone or a fine-tuned run
  (core.classify.static), a logistic-regression head on it; no gradient steps.

`run_recipe` picks one by `cfg.mode` from `MODES`. Every mode opens its run with the scaffold every
task shares (core.runs.scaffold.RecipeRun: claim, tracker, device, seed, ledger) and ends with
core.classify.finish.finish; between them it shares plain steps (`prepare_data`, `build_model`,
`init_head`), never flags or inheritance. Under a launcher of N processes (torchrun, accelerate)
every process loads the same data, builds the same model and trains (fit is collective); only the
main process writes the run directory (core.foundation.distributed), and after training the
others skip calibration and evaluation.
Leaves out: the training loops (core.classify.train, core.classify.fewshot), the evaluations a run
directory holds (core.classify.scoring) and what happens after training (core.classify.finish).
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.classify.fewshot import fit_contrastive, with_label_name_examples
from core.classify.finish import finish
from core.classify.run_data import RunData, load_run_data, prepare_data
from core.classify.static import distill_static, fit_static_head
from core.classify.train import FitResult, fit, has_checkpoint
from core.data.splits import LabelMap, Split
from core.foundation.errors import UserError
from core.foundation.settings import read_yaml_mapping
from core.models.backbones import load_backbone
from core.models.classifier import LoraSettings, build_classifier, choose_probe_c, init_head_from_probe
from core.models.static import StaticClassifier
from core.models.zeroshot import prototypes
from core.runs.scaffold import RecipeRun

# ---------------------------------------------------------------- shared steps


def takes_steps(train_cfg) -> bool:
    return bool(train_cfg.max_steps or train_cfg.epochs)


def open_run(cfg, run_dir: Path, *, resume: bool, overwrite: bool) -> RecipeRun:
    """The scaffold of a classification run: resumable from the checkpoint `fit` writes."""
    return RecipeRun.open(cfg, run_dir, resume=resume, overwrite=overwrite, has_checkpoint=has_checkpoint(run_dir))


def build_model(cfg, labels: list[str], *, peft: str | None = None):
    """The classifier on `cfg.model.backbone`; `peft` overrides cfg.model.peft (probe, zero-shot)."""
    m = cfg.model
    backbone = load_backbone(m.backbone, max_length=m.max_length or None)
    lora = LoraSettings(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout)
    model = build_classifier(backbone, labels, peft=peft or m.peft, lora=lora, dropout=m.dropout)
    model.mixed_precision = cfg.train.mixed_precision  # the probe's embeddings too; saved with the model
    return model


def init_head(model, data: RunData, cfg, device: str, *, search_c: bool) -> dict:
    """Head from a logistic-regression probe on frozen embeddings (C chosen on validation when
    `search_c`). Returns the report's `probe` section ({} when C was not searched)."""
    label_map, validation = LabelMap(data.data.labels), data.data.validation
    model.to(device)  # encode sends its batches to `device`; the model must be there too (fit moves it later anyway)
    c, x = cfg.model.probe_c, model.encode(data.train.texts, device=device)
    probe = {}
    if search_c:
        c, by_c = choose_probe_c(x, label_map.encode(data.train.labels), model.encode(validation.texts, device=device),
                                 label_map.encode(validation.labels))
        probe = {"c": c, "validation_accuracy_by_c": {str(k): v for k, v in by_c.items()}}
    init_head_from_probe(model, data.train.texts, label_map.encode(data.train.labels), c=c, device=device, embeddings=x)
    return probe


def no_steps() -> FitResult:
    """The FitResult of a run that takes no gradient steps (probe, zero-shot)."""
    return FitResult(steps=0, best_step=0, best_metric=None, stopped_early=False, samples_seen=0,
                     tokens_seen=0, train_seconds=0.0)


def probe_section(probe: dict) -> dict:
    return {"probe": probe} if probe else {}


# ---------------------------------------------------------------- one function per mode


def train_probe(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                overwrite: bool = False, progress: bool = True) -> dict:
    """Frozen encoder + logistic-regression head (C chosen on validation with probe_c_search).
    No gradient steps: the `train:` section is not used and there is no checkpoint to resume."""
    run = open_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    data = prepare_data(cfg, data_dir)
    model = build_model(cfg, data.data.labels, peft="frozen")
    run.save_config()
    with run.ledger() as ledger:
        probe = init_head(model, data, cfg, run.device, search_c=cfg.model.probe_c_search)
    return finish(run, data, model, no_steps(), ledger.cost, probe_section(probe))


def train_finetune(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """A head (from a probe unless head_init=random), then `fit` on the encoder or its adapters;
    resumes from the run's checkpoint (which holds the head, so no probe is fitted again)."""
    run = open_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    data = prepare_data(cfg, data_dir)
    model = build_model(cfg, data.data.labels)
    run.save_config()
    with run.ledger() as ledger:
        probe = {}
        if cfg.model.head_init == "probe" and not run.resuming:
            probe = init_head(model, data, cfg, run.device, search_c=cfg.model.probe_c_search)
        result = fit(model, data.train, data.data.validation, cfg.train, device=run.device, run_dir=run.run_dir,
                     resume=run.resuming, progress=progress, metric_sinks=(run.tracker.log_row,))
    return finish(run, data, model, result, ledger.cost, probe_section(probe))


def train_fewshot(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                  overwrite: bool = False, progress: bool = True) -> dict:
    """SetFit-style: the contrastive phase pulls same-label texts together in the encoder, then
    the head (from a probe unless head_init=random), then a fine-tune when `train:` takes steps.
    A resumed run skips both first phases: its checkpoint holds the encoder and head past them."""
    run = open_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    data = prepare_data(cfg, data_dir)
    model = build_model(cfg, data.data.labels)
    run.save_config()
    with run.ledger() as ledger:
        probe = {}
        if not run.resuming:
            fit_contrastive(model, data.train, cfg.contrastive, seed=cfg.train.seed, device=run.device, progress=progress)
            if cfg.model.head_init == "probe":
                probe = init_head(model, data, cfg, run.device, search_c=cfg.model.probe_c_search)
        result = no_steps()
        if takes_steps(cfg.train):
            result = fit(model, data.train, data.data.validation, cfg.train, device=run.device, run_dir=run.run_dir,
                         resume=run.resuming, progress=progress, metric_sinks=(run.tracker.log_row,))
    return finish(run, data, model, result, ledger.cost, probe_section(probe))


def train_zeroshot(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """A classifier from label descriptions, with no labelled training data.

    Each label's descriptions (`zeroshot.descriptions`, a YAML file label -> [sentences]; empty:
    the label's name, "card_arrival" -> "card arrival") are embedded by the frozen encoder and
    averaged into a unit prototype (core.models.zeroshot.prototypes). cos(text, prototype) / T is a
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
    run = open_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    splits, set_aside = load_run_data(cfg.data, data_dir)
    settings = cfg.zeroshot
    descriptions = label_descriptions(settings.descriptions, splits.labels)
    model = build_model(cfg, splits.labels, peft="frozen")
    model.normalize = True  # cosines whatever the backbone does (see above)
    run.save_config()
    with run.ledger() as ledger:
        protos = prototypes([model.encode(descriptions[label], device=run.device) for label in model.labels])
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(protos / settings.temperature))
            model.head.bias.zero_()
        model.head.requires_grad_(False)  # nothing trains: the report's cost counts 0 trainable parameters
    texts = [t for label in model.labels for t in descriptions[label]]
    bank = Split(texts, [label for label in model.labels for _ in descriptions[label]])
    data = RunData(splits, set_aside, Split([], []), scorer_bank=bank)
    return finish(run, data, model, no_steps(), ledger.cost, {"zeroshot": zeroshot_section(cfg, splits, descriptions)})


def zeroshot_section(cfg, splits, descriptions: dict[str, list[str]]) -> dict:
    """The report's `zeroshot` section: where the head came from and which labelled rows were used."""
    settings = cfg.zeroshot
    uses = [u for u, on in (("calibrate the temperature", cfg.model.calibrate),
                            ("set the out-of-scope threshold", cfg.model.ood_scorer != "none")) if on]
    n_val = len(splits.validation)
    labelled = (f"none for the head; {n_val} labelled validation rows only {' and '.join(uses)}" if n_val and uses
                else "none (the temperature stays at zeroshot.temperature)")
    return {"descriptions": settings.descriptions or "label names", "descriptions_per_label":
            {label: len(texts) for label, texts in descriptions.items()}, "temperature": settings.temperature,
            "probabilities": "softmax(cos(text, prototype) / (zeroshot.temperature * confidence.temperature))",
            "labelled_data_used": labelled}


def label_descriptions(path: str, labels: list[str]) -> dict[str, list[str]]:
    """label -> its descriptions: from the YAML file at `path` (label -> a sentence or a list of
    them; every label of the data needs one, and no other label may appear), or, for an empty
    `path`, each label's name with `_`/`-` read as spaces."""
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


def train_static(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """The static-embedding tier: a model2vec table distilled from `static.source` (the backbone,
    or a fine-tuned run), then a logistic-regression head on its embeddings (C chosen on
    validation with probe_c_search). No gradient steps and no checkpoint; the run predicts in
    NumPy (core.models.static) through the same Predictor contract as every other run."""
    run = open_run(cfg, run_dir, resume=resume, overwrite=overwrite)
    data = prepare_data(cfg, data_dir)
    run.save_config()
    with run.ledger() as ledger:
        static_model, source = distill_static(cfg.static, cfg.model.backbone, run.device)
        model = StaticClassifier(static_model, data.data.labels, source=source)
        probe = fit_static_head(model, data, cfg.model)
    section = {"static": {"source": source, "embedding_dim": model.dim, "vocabulary": len(static_model.tokens),
                          "pca_dims": cfg.static.pca_dims, "sif_coefficient": cfg.static.sif_coefficient,
                          "max_length": cfg.static.max_length}}
    return finish(run, data, model, no_steps(), ledger.cost, probe_section(probe) | section)


MODES = {"probe": train_probe, "finetune": train_finetune, "fewshot": train_fewshot, "zeroshot": train_zeroshot,
         "static": train_static}


def run_recipe(cfg, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
               overwrite: bool = False, progress: bool = True) -> dict:
    """Train `cfg` into `run_dir` with its mode's function. An existing run there is refused unless
    `overwrite` (start again) or `resume` (continue from its checkpoint, with the same settings):
    core.runs.rundir.claim_run_dir."""
    if cfg.mode not in MODES:
        raise UserError(f"bad value for 'mode': {cfg.mode!r}; choose one of {', '.join(MODES)}")
    return MODES[cfg.mode](cfg, Path(run_dir), data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress)
