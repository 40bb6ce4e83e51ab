"""Model cards: a run's report.json -> README.md with the YAML front matter a model hub reads.

Every run directory gets one (core.runs.rundir.write_report), and so does every `verticals export hf`
directory (with that export's loading instructions). The card is a task's: its renderer
(core.runs.tasks.ReportRenderer; core.classify.card, solutions.recsys.report) writes the summary,
how to load it and its own sections, and composes them with what this module holds for every
task: the front matter (`front_matter`: library and pipeline tag from the task's `HubKind`, the
base model, dataset, license, tags, a model-index of the test metrics), the training data, the
metrics per split, the cost, how to reproduce the run and the limitations every run shares
(`card_text` puts them together), and the precision a run computed in for the tasks that record
it (`precision_section`). Hand-written instead of huggingface_hub's ModelCard templates: those
are Jinja templates for generic Trainer runs; ours come from our own report keys (data card,
cost ledger, confidence), and a card must stay a pure function of the report so it renders
offline, in tests, for any task. `license` in the front matter is the training data's, as its
data card states it (the backbone's own license applies to the weights too; the card says so).
Leaves out: each task's own sections, hub upload (core.export.hub), dataset cards, evaluation
results other than the report's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from core.data.catalog import list_cards, load_card
from core.models.backbones import TINY, is_local_backbone
from core.runs.markdown import markdown_table, precision_description

# our backbone aliases -> the hub ids they are copies of (core.models.backbones ships them as packages)
BASE_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2"}
# license identifiers a hub's `license` field accepts, matched against the start of a data card's text
HUB_LICENSES = ("cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-3.0", "mit",
                "apache-2.0", "odc-by", "odbl", "pddl", "openrail", "gpl-3.0", "bsd-3-clause")


@dataclass(frozen=True)
class HubKind:
    """What a hub is told a task's model is: its library, pipeline tag, tags and model-index task."""

    library_name: str  # e.g. transformers
    pipeline_tag: str  # e.g. text-classification
    tags: tuple[str, ...]  # after `verticals` and the peft tag
    index_task: dict  # the model-index `task`: {"type", "name"}


def base_model(backbone: str | None) -> str | None:
    """The hub id a run's backbone is, or None (tiny, a local directory, nothing recorded)."""
    if not backbone or backbone == TINY:
        return None
    if backbone in BASE_MODELS:
        return BASE_MODELS[backbone]
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", backbone) is not None
    return backbone if looks_like_hub_id and not is_local_backbone(backbone) else None


def hub_license(text: str | None) -> dict:
    """Front-matter license fields from a data card's license text: a hub identifier when the text
    starts with one (`CC0-1.0 (written by ...)` -> cc0-1.0), else `other` with the text as its name."""
    if not text:
        return {}
    head = text.strip().split()[0].lower().rstrip(",;:")
    if head in HUB_LICENSES:
        return {"license": head}
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "unknown"
    return {"license": "other", "license_name": slug}


def data_card(report: dict) -> dict:
    """The report's data card (name, license, citation, url); for a report without one the
    catalog's card of the dataset it names, if it is one of ours."""
    if report.get("data_card"):
        return report["data_card"]

    name = (report.get("data") or {}).get("name")
    if name not in list_cards():
        return {}
    card = load_card(name)
    return {k: card.get(k) for k in ("name", "license", "citation", "url")}


def front_matter(report: dict, kind: HubKind) -> dict:
    cfg, card = report.get("config", {}), data_card(report)
    backbone = cfg.get("model", {}).get("backbone")
    dataset = card.get("name") or report.get("data", {}).get("name")
    meta = {"library_name": kind.library_name, "pipeline_tag": kind.pipeline_tag}
    if base_model(backbone):
        meta["base_model"] = base_model(backbone)
    if dataset:
        meta["datasets"] = [dataset]
    meta |= hub_license(card.get("license"))
    peft = cfg.get("model", {}).get("peft")
    meta["tags"] = ["verticals", *([f"peft-{peft}"] if peft in ("lora", "ia3") else []), *kind.tags]
    index = model_index(report, dataset, kind)
    if index:
        meta["model-index"] = index
    return meta


def model_index(report: dict, dataset: str | None, kind: HubKind) -> list:
    """The test split's numeric metrics in the hub's model-index layout (empty without any)."""
    metrics = report.get("metrics", {}).get("test") or {}
    rows = []
    for key, value in metrics.items():
        if key == "n" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric_type = {"macro_f1": "f1"}.get(key, key)
        rows.append({"type": metric_type, "value": round(float(value), 4), "name": key.replace("_", " "),
                     **({"args": {"average": "macro"}} if key == "macro_f1" else {})})
    if not rows:
        return []
    return [{"name": report.get("config", {}).get("name") or "verticals-model",
             "results": [{"task": kind.index_task, "dataset": {"name": dataset or "own data",
                                                               "type": dataset or "own", "split": "test"},
                          "metrics": rows}]}]


def fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def table(header: list[str], rows: list[list]) -> list[str]:
    return markdown_table(header, [[fmt(v) for v in row] for row in rows])


def metrics_section(report: dict) -> list[str]:
    metrics = report.get("metrics") or {}
    if not metrics:
        return ["No held-out metrics in this run's report."]
    keys = [k for k in dict.fromkeys(k for m in metrics.values() for k, v in m.items()
                                     if isinstance(v, (int, float)) and not isinstance(v, bool))]
    return table(["split", *keys], [[split, *(m.get(k, "-") for k in keys)] for split, m in metrics.items()])


def data_section(report: dict) -> list[str]:
    card, data = data_card(report), report.get("data") or {}
    source = report.get("config", {}).get("data", {}).get("source")
    lines = [f"- dataset: `{card.get('name') or data.get('name') or source}`"
             + (f" (source `{source}`)" if source and source != card.get("name") else "")]
    lines.append(f"- license: {card.get('license') or 'not recorded: check the data owner terms before sharing'}")
    if card.get("citation"):
        lines.append(f"- citation: {' '.join(str(card['citation']).split())}")
    if card.get("url"):
        lines.append(f"- url: {card['url']}")
    sizes = {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}
    if sizes:
        lines.append("- sizes: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    return lines


def data_and_metrics(report: dict) -> list[str]:
    """## Training data and ## Metrics, each after a blank line."""
    return ["", "## Training data", "", *data_section(report), "", "## Metrics", "", *metrics_section(report)]


def cost_section(report: dict) -> list[str]:
    """## Cost (after a blank line), with where it was measured; [] when the report has no cost."""
    cost = report.get("cost") or {}
    if not cost:
        return []
    lines = ["", "## Cost", "", *table(["item", "value"], [[k, v] for k, v in cost.items()])]
    device = (report.get("environment") or {}).get("device")
    if device:
        lines.append(f"\nMeasured on `{device}` ({(report.get('environment') or {}).get('cpus', '?')} CPUs).")
    return lines


def precision_section(report: dict, exported: bool = False) -> list[str]:
    """## Precision (after a blank line): what the run computed in and what a loaded copy (or, `exported`,
    the export in plain transformers) computes in; [] when the report records no precision."""
    precision = report.get("precision") or {}
    text = precision_description(precision)
    if not text:
        return []
    lines = ["", "## Precision", "", f"Trained, calibrated and evaluated in {text}."]
    if exported:
        lines.append("This export holds float32 weights: plain `transformers` computes in float32 unless the "
                     "caller runs it under `torch.autocast`.")
    elif precision.get("mixed_precision") == "auto":
        lines.append("Loaded on another machine, `auto` is resolved again there: bf16 autocast on a CPU with "
                     "native bf16 (avx512_bf16 or amx_bf16), float32 on a CPU without it, bf16 or fp16 on a GPU.")
    elif precision.get("mixed_precision") == "bf16":
        lines.append("Loaded anywhere, it predicts in bf16 autocast: emulated, and slower, on a CPU without "
                     "native bf16.")
    return lines


def limitations(report: dict, task_lines: list[str]) -> list[str]:
    """What every run's card warns about (a test backbone, a local one, a smoke run), the task's
    own `task_lines`, then the license caveat."""
    backbone = report.get("config", {}).get("model", {}).get("backbone")
    lines = []
    if backbone == "tiny":
        lines.append("- built on `tiny`, a random 2-layer test backbone: its predictions are meaningless "
                     "outside tests. No base_model is named for it.")
    elif base_model(backbone) is None and backbone:
        lines.append(f"- the backbone `{backbone}` is a local directory, not a hub id: no base_model is named.")
    steps = (report.get("fit") or {}).get("steps")
    if isinstance(steps, int) and 0 < steps < 50:
        lines.append(f"- trained for only {steps} steps: a smoke run, not a tuned model.")
    lines += task_lines
    lines.append("- license: the `license` field states the training data's terms; the backbone's license also "
                 "applies to the weights.")
    return lines


def card_text(report: dict, kind: HubKind, summary: list[str], sections: list[str], task_limits: list[str]) -> str:
    """README.md: the front matter, the title, the task's `summary` lines and `sections` (from
    "How to load" through its results, each with its heading), then the cost, how to reproduce the
    run and its limitations (the shared ones around the task's `task_limits`)."""
    cfg = report.get("config", {})
    head = yaml.safe_dump(front_matter(report, kind), sort_keys=False, allow_unicode=True)
    lines = ["---", head.rstrip(), "---", "", f"# {cfg.get('name') or 'verticals model'}", "", *summary, *sections,
             *cost_section(report),
             "", "## How to reproduce", "", "The run's resolved config (its `config.yaml`); train it again with "
             "`verticals train config.yaml --out NEW_RUN_DIR`:", "", "```yaml",
             yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```",
             "", "## Limitations", "", *limitations(report, task_limits), ""]
    return "\n".join(lines)
