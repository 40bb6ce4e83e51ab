"""A set-autoencoder run's report.md and model card, and its ReportRenderer (SET_REPORT).

report.md: core.runs.markdown's header, the data counts, the network and how training went (the
validated run's best NDCG@10 and step, whether it stopped early, the refit), the validation curve
as a table, then the cost. The model card: front matter, how to serve it (`verticals recsys index
RUN --out DIR`), its data and its limits. Light on purpose, like solutions.recsys.als_report: the
app layer's registry imports it at start-up.
Leaves out: the recipe (solutions.recsys.set_recipe).
"""

from __future__ import annotations

from core.runs.card import HubKind, card_text, data_and_metrics
from core.runs.markdown import cost_section, data_section, header_section, markdown_table, render_markdown
from core.runs.tasks import ReportRenderer

METRIC = "ndcg@10"
SET_KIND = HubKind(library_name="pytorch", pipeline_tag="other", tags=("recommendation", "autoencoder", "mult-dae"),
                   index_task={"type": "other", "name": "Item recommendation"})


def training_section(report: dict) -> list[str]:
    """## Training: the network, the validated run and the refit, and the validation curve."""
    fit, net = report.get("fit") or {}, report.get("network") or {}
    best = fit.get(f"validation_{METRIC}")
    lines = ["## Training", "",
             f"- network: {net.get('items', 0):,} items, dim {net.get('dim')}, input dropout {net.get('dropout')}, "
             f"reconstruct weight {net.get('reconstruct_weight')}; item tables "
             + (f"started from {net.get('encoder')} text vectors" if net.get("text_init") else "started at random"),
             f"- validated run: best validation {METRIC} "
             + (f"{best:.4f} at step {fit.get('best_step')}" if best is not None else "not measured (no validation users)")
             + f" of {fit.get('steps')} ({'stopped early' if fit.get('stopped_early') else 'ran to its cap'})"]
    if "refit_seconds" in fit:
        lines.append(f"- refit on every interaction for {fit.get('best_step')} steps ({fit['refit_seconds']:.0f} s)")
    rows = [[str(r["step"]), f"{r[f'validation_{METRIC}']:.4f}"] for r in fit.get("history") or []]
    return lines + (["", *markdown_table(["step", f"validation {METRIC}"], rows)] if rows else [])


def render_report(report: dict) -> str:
    return render_markdown(report, (header_section, data_section, training_section, cost_section))


def model_card(report: dict, *, exported: bool = False) -> str:
    cfg = report.get("config", {})
    summary = [("A set-autoencoder recommender (a Mult-DAE: the user's set of liked items in, a softmax over the "
                f"catalog out) trained with the verticals recipe `{cfg.get('name') or 'recsys/set'}`."),
               cfg.get("description") or ""]
    sections = ["", "## How to serve", "", ("`verticals recsys index RUN_DIR --out INDEX_DIR`, then `verticals recsys "
                "serve INDEX_DIR`: the user vector is computed from the history at request time and one index search "
                "ranks the items."), *data_and_metrics(report)]
    limits = ["- an item added after training has no learned vector: adding items by text is refused; retrain.",
              "- the softmax runs over the whole catalog each step: memory and time grow with the number of items."]
    return card_text(report, SET_KIND, summary, sections, limits)


SET_REPORT = ReportRenderer(markdown=render_report, card=model_card)
