"""`verticals export hf`: a run directory -> a directory other tools load, and its upload to a hub.

`export_hf(run_dir, out_dir, write_model=..., card=...)` checks the output directory, has the
run's task write its model files (`write_model(run_dir, report, directory)`) and its model card
(`card(report, exported=True)`) into a sibling temporary directory, and renames it into place.
The app layer picks both by the report's task (verticals.registry.TASKS). What a classification
run exports (`write_classifier_run`) is a `transformers` model directory: config.json (our labels
in id2label / label2id, `auto_map` naming the classes of modeling_verticals.py, a copy of
core/models/hf_modeling.py), model.safetensors (the encoder, LoRA/IA3 merged, and the head with
the calibration temperature folded in: W/T, b/T), the tokenizer with `model_max_length` = the
run's max_length. `pipeline("text-classification", model=OUT, trust_remote_code=True)` then
answers the label and calibrated probability `verticals predict` does. Without trust_remote_code
loading fails: config.json's model_type `verticals` is unknown to transformers, so it never falls
back to a random head on CLS pooling (what loading `RUN/model/encoder` into the pipeline does).
The out-of-scope scorer is not part of the exported model; config.json records it under
`verticals` and the card says only the verticals router applies it.
A multi-label run (model/multilabel.json) exports with problem_type multi_label_classification and
its thresholds under `verticals`; `pipeline(..., top_k=None, function_to_apply="sigmoid")` gives its
calibrated per-label probabilities.
The upload uses huggingface_hub (`create_repo(exist_ok=True)` + `upload_folder`); offline or without a token it is a UserError naming the fix.
Leaves out: the cards' text (core.runs.card and the tasks'), other tasks' model files (e.g.
solutions.recsys.export), ONNX export (core.export.onnx), pushing run directories as is.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from core.foundation.errors import UserError
from core.models import hf_modeling
from core.models.classifier import load_classifier
from core.models.hf_modeling import VerticalsConfig, VerticalsForSequenceClassification
from core.models.multilabel import HEAD_FILE as MULTILABEL_FILE
from core.models.predictor import model_dir
from core.runs.rundir import read_report

MODELING_FILE = "modeling_verticals.py"
AUTO_MAP = {"AutoConfig": "modeling_verticals.VerticalsConfig",
            "AutoModelForSequenceClassification": "modeling_verticals.VerticalsForSequenceClassification"}
EXPORT_FORMAT = 1  # the `verticals` record in config.json


def is_export(directory: Path) -> bool:
    """Whether `directory` holds a previous `verticals export hf` (its README's front matter tags it)."""
    readme = Path(directory) / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return False
    try:
        meta = yaml.safe_load(text[4:text.index("\n---", 4)]) or {}
    except yaml.YAMLError:
        return False
    return isinstance(meta, dict) and "verticals" in (meta.get("tags") or [])


def _check_out_dir(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or run in out.parents or out in run.parents:
        raise UserError(f"OUT {out_dir} is the run directory {run_dir}, inside it, or holds it: export to a "
                        f"separate directory, e.g. {run_dir.name}-hf")
    if out_dir.is_file():
        raise UserError(f"OUT {out_dir} is a file; give a directory to export into")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{out_dir} already exists and is not empty; choose another OUT, or add --overwrite "
                            f"to replace a previous export there")
        if not is_export(out_dir):
            raise UserError(f"--overwrite replaces only a previous `verticals export hf` directory, and {out_dir} "
                            f"is not one (no README.md tagged verticals); choose an empty or new OUT")


def export_hf(run_dir: Path, out_dir: Path, *, write_model: Callable[[Path, dict, Path], None],
              card: Callable[..., str], overwrite: bool = False) -> Path:
    """Write a finished run's export into `out_dir`: its task's model files (`write_model(run_dir,
    report, directory)`) and model card (`card(report, exported=True)`) as README.md; returns
    `out_dir`. Written into a sibling temporary directory and renamed into place, so an interrupted
    export never looks complete."""
    run_dir, out_dir = Path(run_dir).expanduser(), Path(out_dir).expanduser()
    report = read_report(run_dir)
    _check_out_dir(out_dir, run_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_model(run_dir, report, work)
        (work / "README.md").write_text(card(report, exported=True), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def write_classifier_run(run_dir: Path, report: dict, directory: Path) -> None:
    """The transformers directory of a classification run (write_classifier on its model/ folder)."""
    write_classifier(model_dir(run_dir), directory, run_name=report.get("config", {}).get("name", ""))


def verticals_record(meta: dict, run_name: str, multi_label: dict | None = None) -> dict:
    """config.json's `verticals` entry: where the model came from and what pipeline() does not apply
    (the out-of-scope scorer; for a multi-label run, `multi_label`: its per-label thresholds)."""
    ood = meta.get("ood")
    record = {"format_version": EXPORT_FORMAT, "run": run_name, "backbone": meta.get("backbone"),
              "peft": meta.get("peft"), "max_length": meta.get("max_length"),
              "temperature_folded_into_classifier": float(meta.get("temperature", 1.0)),
              "out_of_scope": None if not ood else {
                  "scorer": ood.get("scorer"), "threshold": ood.get("threshold"),
                  "target_in_scope_recall": ood.get("target_in_scope_recall"),
                  "applied_by": "the verticals router (verticals support route / serve), not by pipeline()"}}
    if multi_label:
        record["multi_label"] = {"thresholds": multi_label.get("thresholds"),
                                 "applied_by": "the verticals router, not by pipeline()"}
    return record


def hf_classifier(model, meta: dict, run_name: str = "", multi_label: dict | None = None):
    """A core.models.hf_modeling.VerticalsForSequenceClassification with the weights of `model` (a
    core.models.classifier.TextClassifier, adapters already merged) and its temperature folded into the head.
    `multi_label` (model/multilabel.json of a multi-label run): problem_type multi_label_classification,
    so sigmoid(logits) is the calibrated per-label probability."""
    encoder = model.encoder
    if hasattr(encoder, "merge_and_unload"):  # a TextClassifier loaded with merge=False
        encoder = encoder.merge_and_unload()
    # the backbone's settings only: no private keys, no path it was loaded from
    encoder_config = {k: v for k, v in encoder.config.to_dict().items() if not k.startswith("_")}
    labels = list(model.labels)
    config = VerticalsConfig(encoder_config=encoder_config, pooling=model.pooling, normalize=model.normalize,
                             id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
                             problem_type="multi_label_classification" if multi_label else "single_label_classification",
                             verticals=verticals_record(meta, run_name, multi_label))
    config.auto_map = dict(AUTO_MAP)
    hf = VerticalsForSequenceClassification(config)
    hf.encoder.load_state_dict(encoder.state_dict())
    temperature = float(model.temperature)
    with torch.no_grad():
        hf.classifier.weight.copy_(model.head.weight / temperature)
        hf.classifier.bias.copy_(model.head.bias / temperature)
    return hf.eval()


def write_classifier(model_dir: Path, directory: Path, *, run_name: str = "") -> None:
    model_dir = Path(model_dir)
    model = load_classifier(model_dir)  # LoRA / IA3 merged into the encoder
    meta = json.loads((model_dir / "classifier.json").read_text())
    head_file = model_dir / MULTILABEL_FILE
    multi_label = json.loads(head_file.read_text()) if head_file.is_file() else None
    hf_classifier(model, meta, run_name, multi_label).save_pretrained(directory)
    tokenizer = model.tokenizer
    tokenizer.model_max_length = model.max_length  # pipeline(..., truncation=True) then cuts where verticals does
    tokenizer.save_pretrained(directory)
    settings_file = Path(directory) / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text())
    for machine_only in ("is_local", "local_files_only"):  # how it was loaded here, not how to load it elsewhere
        settings.pop(machine_only, None)
    settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    shutil.copyfile(hf_modeling.__file__, Path(directory) / MODELING_FILE)


def push_to_hub(directory: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an export to the hub repository `repo_id` (created if missing); returns its URL."""
    from huggingface_hub import HfApi, constants  # lazy: only when a hub is used
    from huggingface_hub.errors import HTTPError  # lazy: only when a hub is used

    if constants.HF_HUB_OFFLINE:
        raise UserError(f"--push {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded. The export in "
                        f"{directory} is complete; unset HF_HUB_OFFLINE on a machine with network access and run "
                        f"`verticals export hf RUN {directory} --overwrite --push {repo_id}` again, or upload the "
                        f"folder with huggingface_hub")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, exist_ok=True, private=private)
        api.upload_folder(folder_path=str(directory), repo_id=repo_id, commit_message="verticals export hf")
    except (OSError, ValueError, HTTPError) as exc:  # offline, no network, no token, bad repo id, denied
        raise UserError(f"--push {repo_id} failed ({type(exc).__name__}: {str(exc)[:300]}). Check the network and "
                        f"your token (`hf auth login` or HF_TOKEN) and that the repo id is yours; the export in "
                        f"{directory} is complete and can be pushed again") from None
    return str(url)
