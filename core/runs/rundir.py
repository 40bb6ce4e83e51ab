"""Run directory writer/reader: claiming a directory, its config, its report and where runs go.

A run directory holds: config.yaml (resolved), metrics.jsonl and loss_curve.png (runs that take
gradient steps), the model, report.json, report.md, README.md (the model card) and the task's
plots (+ checkpoint/ while training). `claim_run_dir` decides, before any work, whether a training
job may write into a directory: it never silently replaces a finished run, resumes one, or
resumes with other settings. `write_report` writes report.json and renders report.md and the card
with the task's renderer (core.runs.tasks.ReportRenderer); `default_out` names a new run.
Leaves out: what a task trains and evaluates (core.classify, the solutions' recipes) and the
evaluations a classification run holds (core.classify.scoring).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from core.foundation.errors import UserError
from core.runs.tasks import ReportRenderer

REPORT_FILE = "report.json"


def environment() -> dict:
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


def write_report(run_dir: Path, report: dict, renderer: ReportRenderer) -> Path:
    """report.json of a finished run, and its report.md and README.md (the model card) as its task's
    `renderer` writes them."""
    run_dir = Path(run_dir)
    report.setdefault("finished_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    (run_dir / "report.md").write_text(renderer.markdown(report))
    (run_dir / "README.md").write_text(renderer.card(report), encoding="utf-8")
    return run_dir / REPORT_FILE


def read_report(run_dir: Path) -> dict:
    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished run directory (no {REPORT_FILE}); "
                        f"train one with `verticals train <recipe> --out DIR`.")
    return json.loads(path.read_text())


def default_out(name: str) -> Path:
    return Path("runs") / f"{name.replace('/', '-') or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
