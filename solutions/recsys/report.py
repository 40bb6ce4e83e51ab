"""An item-encoder run's report.md and model card, and its ReportRenderer (ITEM_ENCODER_REPORT).

report.md (`render_report`): core.runs.markdown's header, the data as counts (items, interactions,
users), metrics when the report has any, the training on co-consumption pairs (steps, pairs seen,
the loss at the first and last steps) and the cost. The model card (`model_card`): front matter for
`sentence-transformers` / `sentence-similarity` (the test ranking metrics in a model-index when the
report has them), how to load the encoder, its training data and metrics, and where ranking quality
is measured instead (`verticals recsys evaluate`). solutions.recsys.recipe writes its run with it;
the app layer registers it for the recsys-item-encoder task.
Leaves out: the generic sections (core.runs.markdown, core.runs.card) and the export (solutions.recsys.export).
"""

from __future__ import annotations

import numpy as np

from core.runs.card import HubKind, card_text, data_and_metrics
from core.runs.markdown import cost_section, data_section, header_section, metrics_section, plot, render_markdown
from core.runs.tasks import ReportRenderer

ITEM_ENCODER = HubKind(library_name="sentence-transformers", pipeline_tag="sentence-similarity",
                       tags=("sentence-transformers", "feature-extraction", "recommendation"),
                       index_task={"type": "sentence-similarity", "name": "Item retrieval"})


def training_section(report: dict) -> list[str]:
    """## Training: steps on co-consumption pairs and the loss (every step's when the run is that short)."""
    fit = report.get("fit") or {}
    if not fit.get("steps"):
        return []
    lines = [f"- {fit['steps']:,} steps on {fit['pairs']:,} co-consumption pairs ({fit.get('samples', 0):,} "
             f"pairs seen){', stopped by the time limit' if fit.get('stopped_by_time') else ''}"
             f"{', ' + str(fit['processes']) + ' processes' if fit.get('processes', 1) > 1 else ''}"]
    first, last = fit.get("loss_first") or [], fit.get("loss_last") or []
    if first and fit["steps"] <= len(first) + len(last):  # first and last overlap: every step's loss
        losses = first + last[len(first) + len(last) - fit["steps"]:]
        lines.append(f"- training loss by step: {', '.join(f'{x:.4f}' for x in losses)}")
    elif first and last:
        lines.append(f"- training loss {np.mean(first):.4f} (first {len(first)} steps) -> {np.mean(last):.4f} "
                     f"(last {len(last)})")
    caption = f"Training loss by step, on {fit['pairs']:,} co-consumption pairs (no validation split)"
    return ["## Training", "", *lines, *plot("loss_curve.png", caption)]


def render_report(report: dict) -> str:
    """report.md of an item-encoder run (see the module docstring)."""
    return render_markdown(report, (header_section, data_section, metrics_section, training_section, cost_section))


def loading_section(exported: bool) -> list[str]:
    where = "this directory" if exported else "`RUN_DIR/encoder`"
    return [f"The encoder in {where} is a sentence-transformers model (pooling and normalisation included):", "",
            "```python", "from sentence_transformers import SentenceTransformer", "",
            f"model = SentenceTransformer(\"{'OUT' if exported else 'RUN_DIR/encoder'}\")",
            "embeddings = model.encode([\"an item title\"])", "```", "",
            "With verticals: `verticals recsys index DATA --model RUN_DIR --out INDEX_DIR`."]


def model_card(report: dict, *, exported: bool = False) -> str:
    """README.md text for an item-encoder run (or, `exported`, for its `verticals export hf` directory)."""
    cfg = report.get("config", {})
    summary = [f"An item text encoder fine-tuned with the verticals recipe `{cfg.get('name') or 'verticals model'}` "
               f"on the backbone `{cfg.get('model', {}).get('backbone')}`: items that users consume close in time "
               f"embed close together (in-batch contrastive loss on co-consumption pairs).",
               cfg.get("description") or ""]
    sections = ["", "## How to load", "", *loading_section(exported), *data_and_metrics(report)]
    if not report.get("metrics"):
        sections += ["", "Ranking quality (recall@k, nDCG@k under a temporal split) is measured by "
                     "`verticals recsys evaluate`, not during training."]
    limits = ["- item embeddings reflect co-consumption in its training interactions; new domains, "
              "languages and item types need their own fine-tune."]
    return card_text(report, ITEM_ENCODER, summary, sections, limits)


ITEM_ENCODER_REPORT = ReportRenderer(markdown=render_report, card=model_card)
