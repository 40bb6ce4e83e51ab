"""An EASE run's report.md and model card, and its ReportRenderer (EASE_REPORT).

report.md: core.runs.markdown's header, the data counts, the l2 EASE was fitted with, how many items
B scores and its size in memory, and, when l2 was searched, each round's grid with its best
validation NDCG@10, every point's validation NDCG@10 and whether the choice is still on an edge;
then the cost. The model card: front matter, how to serve it (`verticals recsys index RUN --out
DIR`), its data, and its memory and cold-start limits. Light on purpose, like
solutions.recsys.als_report: the app layer's registry imports it at start-up.
Leaves out: the recipe (solutions.recsys.ease_recipe).
"""

from __future__ import annotations

import math

from core.runs.card import HubKind, card_text, data_and_metrics
from core.runs.markdown import cost_section, data_section, header_section, markdown_table, render_markdown
from core.runs.tasks import ReportRenderer
from solutions.recsys.als_report import METRIC

EASE_KIND = HubKind(library_name="numpy", pipeline_tag="other", tags=("recommendation", "ease"),
                    index_task={"type": "other", "name": "Item recommendation"})


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def memory_text(n_bytes: float) -> str:
    """A byte count as people read it: 47.3 KiB, 362.1 MiB, 1.5 GiB."""
    for unit in ("bytes", "KiB", "MiB"):
        if n_bytes < 1024:
            return f"{n_bytes:,.0f} bytes" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:,.1f} GiB"


def search_section(report: dict) -> list[str]:
    """## Settings: the fitted l2, B's size and, with a search, each round's grid and every point."""
    fit, search = report.get("fit") or {}, report.get("search")
    n = fit.get("items_scored", 0)
    lines = ["## Settings", "", (f"- fitted with l2 {_fmt((fit.get('params') or {}).get('l2'))}; B scores {n:,} items "
             f"(those with a training positive): {memory_text(fit.get('matrix_bytes', 4 * n * n))} of float32")]
    if not search:
        return lines + ["- taken from the config (model.search=false)"]
    for r in search["rounds"]:
        lines.append(f"- round {r['round']}: grid l2 {', '.join(_fmt(x) for x in r['grid']['l2'])} -> best "
                     f"validation {METRIC} {r[METRIC]:.4f}")
    lines.append("- l2 is still on an edge of its grid (widen search_rounds)" if search["on_edge"]
                 else "- the choice is inside the grid")
    rows = [[_fmt(p["params"]["l2"]), f"{p[METRIC]:.4f}"] for p in sorted(search["points"],
                                                                            key=lambda p: p["params"]["l2"])]
    return lines + ["", *markdown_table(["l2 (every point searched)", f"validation {METRIC}"], rows)]


def render_report(report: dict) -> str:
    return render_markdown(report, (header_section, data_section, search_section, cost_section))


def model_card(report: dict, *, exported: bool = False) -> str:
    cfg, fit = report.get("config", {}), report.get("fit") or {}
    summary = [(f"An EASE recommender (Steck 2019: a closed-form item-item model on implicit feedback) trained with "
               f"the verticals recipe `{cfg.get('name') or 'recsys/ease'}`."), cfg.get("description") or ""]
    sections = ["", "## How to serve", "", ("`verticals recsys index RUN_DIR --out INDEX_DIR`, then `verticals recsys "
                "serve INDEX_DIR`: each request scores the history with B (history row @ B)."), *data_and_metrics(report)]
    n = fit.get("items_scored", 0)
    limits = [(f"- B is dense: {memory_text(4 * n * n)} of memory for its {n:,} items (4·n² bytes); the fit "
              "refuses above model.max_items."),
              "- items without a training positive are not in B: they rank after every item it scores (cold start)."]
    return card_text(report, EASE_KIND, summary, sections, limits)


EASE_REPORT = ReportRenderer(markdown=render_report, card=model_card)
