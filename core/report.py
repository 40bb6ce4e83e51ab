"""Run directory writer/reader.

A run directory holds: config.yaml (resolved), metrics.jsonl (written while training), model/,
report.json, report.md, loss_curve.png, confusion_matrix.png (+ checkpoint/ while training).
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
        lines += ["", "## Confidence", "",
                  f"- temperature {conf.get('temperature', 1.0):.3f} (fitted on validation); test ECE "
                  f"{conf.get('test_ece_before', float('nan')):.4f} before, {conf.get('test_ece_after', float('nan')):.4f} after"]
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
