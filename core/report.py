"""Run directory writer/reader.

A run directory holds: config.yaml (resolved), metrics.jsonl (written while training), model/,
report.json, report.md, loss_curve.png, confusion_matrix.png (+ checkpoint/ while training).
`claim_run_dir` decides, before any work, whether a training job may write into a directory:
it never silently replaces a finished run, resumes one, or resumes with other settings.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import yaml

from core.errors import UserError

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
RUN_FILES = ("config.yaml", "metrics.jsonl", REPORT_FILE, "report.md", "loss_curve.png", "confusion_matrix.png",
             "reliability.png")
RUN_DIRS = ("model", "checkpoint", "checkpoint.old")
RESUMABLE_CHANGES = {"device"}  # settings a resumed run may change (where it runs, not what it learns)


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, new: dict) -> list[str]:
    """'section.key: old -> new' for every setting that differs (a key only one side has included)."""
    a, b = _flat(saved), _flat(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k.rpartition(".")[2] not in RESUMABLE_CHANGES]


def claim_run_dir(run_dir: Path, config: dict, *, resume: bool, overwrite: bool,
                  has_checkpoint: bool) -> bool:
    """Check that a training job may write `config`'s run into `run_dir`; True when it resumes.

    Fresh (missing, or no run files in it): train. A finished run (report.json) or an unfinished
    one: refused unless `overwrite` (its run files are removed first) or, for an unfinished run with
    a checkpoint, `resume` with the very settings it was started with."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite starts it again: choose one")
    existing = [n for n in RUN_FILES + RUN_DIRS if (run_dir / n).exists()]
    finished = (run_dir / REPORT_FILE).is_file()
    if overwrite:
        import shutil

        for name in existing:
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
    run_dir = Path(run_dir)
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    (run_dir / "report.md").write_text(render_markdown(report))
    return run_dir / REPORT_FILE


def read_report(run_dir: Path) -> dict:
    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished run directory (no {REPORT_FILE}); "
                        f"train one with `verticals train <recipe> --out DIR`.")
    return json.loads(path.read_text())


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def render_markdown(report: dict) -> str:
    cfg = report.get("config", {})
    cost = report.get("cost", {})
    lines = [f"# Run report: {cfg.get('name', '')}", "",
             f"- backbone: `{cfg.get('model', {}).get('backbone')}`, peft: `{cfg.get('model', {}).get('peft')}`",
             f"- data: `{report.get('data', {}).get('name')}` ({report.get('data', {})})", ""]
    lines += ["## Metrics", "", "| split | n | accuracy | macro-F1 |", "|---|---|---|---|"]
    for split, m in report.get("metrics", {}).items():
        lines.append(f"| {split} | {m.get('n', '-')} | {_pct(m.get('accuracy'))} | {_pct(m.get('macro_f1'))} |")
    fit = report.get("fit", {})
    if fit:
        lines += ["", f"Best validation {fit.get('metric')}: {_pct(fit.get('best_metric'))} at step "
                  f"{fit.get('best_step')} of {fit.get('steps')}{' (stopped early)' if fit.get('stopped_early') else ''}."]
    conf = report.get("confidence", {})
    if conf:
        fitted_on = f"fitted on {conf['temperature_fitted_on']} validation rows" if "temperature_fitted_on" in conf \
            else "fitted on validation"
        lines += ["", "## Confidence", "",
                  f"- temperature {conf.get('temperature', 1.0):.3f} ({fitted_on}); test ECE "
                  f"{conf.get('test_ece_before', float('nan')):.4f} before, {conf.get('test_ece_after', float('nan')):.4f} after"]
        if conf.get("temperature_note"):
            lines.append(f"- note: {conf['temperature_note']}")
        if "ood_scorer" in conf:
            lines.append(f"- out-of-scope scorer `{conf['ood_scorer']}`, threshold {conf['ood_threshold']:.4f} "
                         f"(keeps {100 * conf['ood_target_in_scope_recall']:.0f}% of in-scope validation queries)")
        for key, value in conf.items():
            if key.startswith("out_of_scope_"):
                lines.append(f"- {key[len('out_of_scope_'):]} set: AUROC {value['auroc']:.4f}, out-of-scope recall "
                             f"{100 * value['out_of_scope_recall']:.1f}%, in-scope recall {100 * value['in_scope_recall']:.1f}%")
        lines += ["", "![reliability diagram](reliability.png)"]
    lines += ["", "## Cost", "", "| item | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in cost.items()]
    lines += ["", "![training curve](loss_curve.png)", "", "![confusion matrix](confusion_matrix.png)", ""]
    return "\n".join(lines)
