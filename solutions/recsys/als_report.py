"""An ALS run's report.md and model card, and its ReportRenderer (ALS_REPORT).

report.md: core.runs.markdown's header, the data counts, the settings ALS was fitted with and, when
they were searched, each round's grid and best validation NDCG@10, the best five points and any
axis still on its grid's edge; then the cost. The model card: front matter for an `implicit`
recommender, how to serve it (`verticals recsys index DATA --model RUN`), its data, and its
cold-start limit. Light on purpose: the app layer's registry imports it at start-up.
Leaves out: the recipe (solutions.recsys.als_recipe).
"""

from __future__ import annotations

import math

from core.runs.card import HubKind, card_text, data_and_metrics
from core.runs.markdown import cost_section, data_section, header_section, markdown_table, render_markdown
from core.runs.tasks import ReportRenderer

METRIC = "ndcg@10"  # what the search chooses on

ALS_KIND = HubKind(library_name="implicit", pipeline_tag="other", tags=("recommendation", "implicit", "als"),
                   index_task={"type": "other", "name": "Item recommendation"})


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def search_section(report: dict) -> list[str]:
    """## Settings: the fitted settings and, with a search, each round's grid, the best points and any edge left."""
    fit, search = report.get("fit") or {}, report.get("search")
    lines = ["## Settings", "", f"- fitted with {', '.join(f'{k} {_fmt(v)}' for k, v in (fit.get('params') or {}).items())}"
             f"; {fit.get('items_with_factors', 0):,} items have a factor (a training positive)"]
    if not search:
        return lines + ["- taken from the config (model.search=false)"]
    for r in search["rounds"]:
        grid = "; ".join(f"{k} {', '.join(_fmt(x) for x in v)}" for k, v in r["grid"].items())
        lines.append(f"- round {r['round']}: grid {grid} -> best validation {METRIC} {r[METRIC]:.4f}")
    lines.append(f"- still on an edge of its grid: {', '.join(search['on_edge'])} (widen search_rounds)"
                 if search["on_edge"] else "- the choice is inside the grid on every axis")
    top = sorted(search["points"], key=lambda p: -p[METRIC])[:5]
    rows = [[", ".join(f"{k} {_fmt(v)}" for k, v in p["params"].items()), f"{p[METRIC]:.4f}"] for p in top]
    return lines + ["", *markdown_table(["settings (best 5 of the search)", f"validation {METRIC}"], rows)]


def render_report(report: dict) -> str:
    return render_markdown(report, (header_section, data_section, search_section, cost_section))


def model_card(report: dict, *, exported: bool = False) -> str:
    cfg = report.get("config", {})
    summary = [f"An ALS recommender (implicit's alternating least squares on implicit feedback) trained with the "
               f"verticals recipe `{cfg.get('name') or 'recsys/als'}`.", cfg.get("description") or ""]
    sections = ["", "## How to serve", "", "`verticals recsys index DATA --model RUN_DIR --out INDEX_DIR`, then "
                "`verticals recsys serve INDEX_DIR`: the user vector is ALS's fold-in of the history at request "
                "time.", *data_and_metrics(report)]
    limits = ["- items without a training positive have no factor and are never recommended (cold start)."]
    return card_text(report, ALS_KIND, summary, sections, limits)


ALS_REPORT = ReportRenderer(markdown=render_report, card=model_card)
