"""report.md: a run's report.json written out for a person to read, from the sections its task picks.

`render_markdown(report, sections)` joins the sections a task's renderer lists (core.runs.tasks.
ReportRenderer: core.classify.report for classification, solutions.recsys.report for the item
encoder), each a function `report -> lines` that returns [] when the report lacks what it shows.
This module holds the sections every task shares: what the run is (`header_section`: recipe,
mode, backbone, data, when, how long, where, the precision it computed in:
`precision_description`), its data as counts (`data_section`) with the data
card, its metrics per split (`metrics_section`), the cost with units (`cost_section`), and the
number formats, tables and plot captions the tasks' own sections use. Every section reads only the
keys it needs with defaults, so reports of older versions (fewer keys) render what they hold.
Hand-written because it is a few string tables over our own report layout (a template engine or
pandas' `to_markdown` would add a dependency, not remove code). Leaves out: each task's own
sections, computing anything (metrics come from core.evaluation.metrics / core.confidence,
recorded by the recipes) and the plots themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

PERCENT_METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def render_markdown(report: dict, sections: Sequence[Callable[[dict], list[str]]]) -> str:
    """report.md for `report` (a run's report.json dict): each of `sections` in order, empty ones left out."""
    rendered = (section(report) for section in sections)
    return "\n\n".join("\n".join(lines) for lines in rendered if lines) + "\n"


# ---------------------------------------------------------------- number formats

def pct(x, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def num(x, digits: int = 4) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-" if x is None else str(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}f}"


def row_count(n) -> str:
    return f"{n:,} rows" if isinstance(n, int) else "rows unknown"


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _count_short(n: int) -> str:
    """22742861 -> 22.7M; below a million the exact count."""
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n:,}"


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table; cells as str() gives them (format them first)."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def plot(file: str, caption: str) -> list[str]:
    """A plot of the run directory with its caption (which names its split and row count)."""
    return ["", f"![{file.removesuffix('.png').replace('_', ' ')}]({file})", "", f"*{caption}.*"]


# ---------------------------------------------------------------- sections every task shares

def _model_line(model: dict, mode: str | None = None) -> str:
    peft = model.get("peft")
    text = f"backbone `{model.get('backbone', '?')}`"
    if mode == "static":
        text += ", distilled into a static-embedding table + a linear head (only the head trained)"
    elif peft == "lora":
        text += f", LoRA adapters (r {model.get('lora_r', '?')}, alpha {model.get('lora_alpha', '?')})"
    elif peft == "none":
        text += ", every weight trained"
    elif peft:
        text += f", peft `{peft}`"
    return text


def precision_description(precision: dict) -> str:
    """A report's `precision` section in words: `bf16 autocast (mixed_precision=auto, on a CPU with
    native bf16: amx_bf16)`; "" when the report records none."""
    resolved = precision.get("resolved")
    if not resolved:
        return ""
    how = {"fp32": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}.get(resolved, resolved)
    cpu = precision.get("cpu_bf16")
    where = ""
    if isinstance(cpu, dict):
        where = (f", on a CPU with native bf16: {', '.join(cpu.get('flags') or [])}" if cpu.get("native")
                 else f", on a CPU without native bf16 ({cpu.get('capability') or 'no avx512_bf16 or amx_bf16'})")
    return f"{how} (mixed_precision={precision.get('mixed_precision')}{where})"


def header_section(report: dict) -> list[str]:
    cfg, cost, env = report.get("config") or {}, report.get("cost") or {}, report.get("environment") or {}
    data = report.get("data") or {}
    lines = [f"# Run report: {cfg.get('name') or 'unnamed run'}", ""]
    if cfg.get("description"):
        lines += [cfg["description"], ""]
    kind = ", ".join(f"{k} `{cfg[k]}`" for k in ("task", "mode") if cfg.get(k))
    if cfg.get("name") or kind:
        lines.append(f"- **recipe**: `{cfg.get('name') or 'unnamed'}`" + (f" ({kind})" if kind else ""))
    if (cfg.get("model") or {}).get("backbone"):  # a text model (a factor model's settings have their own section)
        lines.append(f"- **model**: {_model_line(cfg['model'], cfg.get('mode'))}")
    source = (cfg.get("data") or {}).get("source")
    if data.get("name") or source:
        named = f"`{data.get('name') or source}`"
        lines.append(f"- **data**: {named}" + (f" (source `{source}`)" if source and source != data.get("name") else ""))
    when = report.get("finished_at") or report.get("created_at")
    if when:
        lines.append(f"- **finished**: {when}")
    if "wall_seconds" in cost:
        took = f"{duration(cost['wall_seconds'])} wall"
        train_seconds = (report.get("fit") or {}).get("train_seconds")
        if train_seconds:
            took += f", of which {duration(train_seconds)} in the training loop"
        lines.append(f"- **took**: {took}")
    if env:
        packages = env.get("packages") or {}
        where = [env.get("device") or "", f"{env['cpus']} CPU cores" if env.get("cpus") else "",
                 f"load average {env['load_average_1_5_15'][0]}" if env.get("load_average_1_5_15") else "",
                 ", ".join(f"{p} {v}" for p, v in packages.items() if v and p in ("torch", "transformers"))]
        lines.append(f"- **ran on**: {'; '.join(w for w in where if w)}")
    if (report.get("precision") or {}).get("resolved"):
        lines.append(f"- **precision**: {precision_description(report['precision'])}")
    return lines


def data_card_lines(report: dict) -> list[str]:
    """The data card's license, citation and url under a blank line ([] without any)."""
    data, card = report.get("data") or {}, report.get("data_card") or {}
    card_lines = [f"- {key}: {str(card[key]).strip()}" for key in ("license", "citation", "url") if card.get(key)]
    return ["", f"Data card `{card.get('name') or data.get('name')}`:", *card_lines] if card_lines else []


def data_counts(data: dict) -> list[str]:
    """The data summary's numbers as a quantity | count table (e.g. items, interactions, users)."""
    return markdown_table(["quantity", "count"], [[k, num(v)] for k, v in data.items()
                                                  if k != "name" and isinstance(v, (int, float))])


def data_section(report: dict) -> list[str]:
    """## Data: the data summary's counts and the data card."""
    data = report.get("data") or {}
    return ["## Data", "", *data_counts(data), *data_card_lines(report)] if data else []


def _metric_names(metrics: dict) -> list[str]:
    names = []
    for m in metrics.values():
        names += [k for k, v in (m or {}).items() if k != "n" and isinstance(v, (int, float)) and k not in names]
    return [k for k in PERCENT_METRICS if k in names] + [k for k in names if k not in PERCENT_METRICS]


def metrics_section(report: dict) -> list[str]:
    metrics = report.get("metrics") or {}
    names = _metric_names(metrics)
    if not names:
        return []
    rows = [[split, num(m.get("n")), *(pct(m.get(k)) if k in PERCENT_METRICS else num(m.get(k)) for k in names)]
            for split, m in metrics.items()]
    lines = ["## Metrics", "", *markdown_table(["split", "rows", *(PERCENT_METRICS.get(k, k) for k in names)], rows)]
    fit = report.get("fit") or {}
    if fit.get("metric") and isinstance(fit.get("best_metric"), (int, float)):
        best = (f"Best validation {fit['metric']}: {pct(fit['best_metric'])} at step {fit.get('best_step')} "
                f"of {fit.get('steps')}{' (stopped early)' if fit.get('stopped_early') else ''}.")
        lines += ["", best]
    return lines


COST_ROWS = {"wall_seconds": "wall time", "cpu_seconds": "CPU time", "peak_rss_mb": "peak memory (RSS)",
             "train_samples": "training samples seen", "tokens_seen": "tokens seen"}


def cost_section(report: dict) -> list[str]:
    cost = report.get("cost") or {}
    if not cost:
        return []
    rows = []
    for key, name in COST_ROWS.items():
        value = cost.get(key)
        if not isinstance(value, (int, float)) or (key in ("train_samples", "tokens_seen") and not value):
            continue  # a counter left at 0 was not counted by this run's trainer
        if key.endswith("seconds"):
            text = duration(value)
        elif key == "peak_rss_mb":
            text = f"{value:,.0f} MB"
        else:
            text = f"{value:,}"
        if key == "train_samples" and cost.get("train_samples_per_second"):
            text += f" ({cost['train_samples_per_second']:,.1f} per second of wall time)"
        rows.append([name, text])
    total, trainable = cost.get("total_params"), cost.get("trainable_params")
    if isinstance(total, int) and total:
        share = (trainable or 0) / total
        params = f"{trainable or 0:,} of {_count_short(total)} ({pct(share, 2 if 0 < share < 0.01 else 1)})"
        rows.insert(3, ["trainable parameters", params])
    known = set(COST_ROWS) | {"total_params", "trainable_params", "train_samples_per_second", "trainable_fraction"}
    rows += [[key, num(value)] for key, value in cost.items() if key not in known]
    return ["## Cost", "", *markdown_table(["item", "value"], rows)]
