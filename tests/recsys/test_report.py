"""The item encoder's report.md and model card (solutions.recsys.report) on hand-made reports of the shape
solutions/recsys/recipe.py writes: no labels, no data card, co-consumption pairs and a loss."""

from __future__ import annotations

import yaml

from solutions.recsys.report import model_card, render_report


def recsys_report() -> dict:  # the shape solutions/recsys/recipe.py writes: no labels, no data_card
    return {"config": {"name": "recsys/item-encoder", "description": "items", "task": "recsys-item-encoder",
                       "data": {"source": "movielens_latest_small"}, "model": {"backbone": "tiny", "max_length": 32},
                       "train": {"steps": 3}},
            "data": {"name": "movielens_latest_small", "items": 9742, "interactions": 100836, "users": 610},
            "fit": {"steps": 3, "pairs": 50, "samples": 12, "loss_first": [3.1], "loss_last": [2.9]},
            "cost": {"wall_seconds": 4.0}, "environment": {"device": "cpu"}}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---\n", 4)])


def test_recsys_card_is_a_sentence_transformers_card_without_labels():
    card = model_card(recsys_report())
    meta = front_matter(card)
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert "feature-extraction" in meta["tags"] and "base_model" not in meta  # tiny has no hub id
    assert "model-index" not in meta  # no ranking metrics in this report
    assert meta["license"] == "other"  # MovieLens: research-only terms, from the catalog's data card
    assert "## Labels" not in card and "SentenceTransformer(" in card and "verticals recsys evaluate" in card
    assert "research use only" in card and "items 9,742" in card


def test_recsys_card_lists_ranking_metrics_when_the_report_has_them():
    report = recsys_report() | {"metrics": {"test": {"recall@10": 0.25, "ndcg@10": 0.125, "n": 610}}}
    meta = front_matter(model_card(report))
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"recall@10": 0.25, "ndcg@10": 0.125}
    assert meta["model-index"][0]["results"][0]["task"] == {"type": "sentence-similarity", "name": "Item retrieval"}


def test_exported_recsys_card_loads_this_directory():
    card = model_card(recsys_report(), exported=True)
    assert 'SentenceTransformer("OUT")' in card and "The encoder in this directory" in card


RECSYS_REPORT = {
    "config": {"name": "recsys/item-encoder", "task": "recsys-item-encoder", "device": "cpu",
               "data": {"source": "demo_catalog"}, "model": {"backbone": "tiny", "max_length": 32}},
    "data": {"name": "demo_catalog", "items": 120, "interactions": 1300, "users": 60},
    "fit": {"steps": 200, "pairs": 2080, "samples": 6400, "stopped_by_time": False,
            "loss_first": [1.4, 1.3, 1.2], "loss_last": [0.6, 0.5, 0.4], "processes": 1},
    "cost": {"wall_seconds": 95.0, "cpu_seconds": 180.0, "peak_rss_mb": 551.1, "trainable_params": 29792,
             "total_params": 29792, "train_samples": 6400, "tokens_seen": 0, "train_samples_per_second": 67.37,
             "trainable_fraction": 1.0},
}


def test_recsys_report_renders_what_it_has_and_no_classification_tables():
    md = render_report(RECSYS_REPORT)
    assert "- **recipe**: `recsys/item-encoder` (task `recsys-item-encoder`)" in md
    assert "| interactions | 1,300 |" in md and "| users | 60 |" in md
    assert "- 200 steps on 2,080 co-consumption pairs (6,400 pairs seen)" in md
    assert "- training loss 1.3000 (first 3 steps) -> 0.5000 (last 3)" in md
    assert "*Training loss by step, on 2,080 co-consumption pairs (no validation split).*" in md
    assert "| wall time | 1 min 35 s |" in md and "| trainable parameters | 29,792 of 29,792 (100.0%) |" in md
    for absent in ("## Metrics", "accuracy", "confusion_matrix.png", "reliability.png", "## Errors", "classes"):
        assert absent not in md


def test_recsys_report_with_ranking_metrics_gets_their_columns():
    report = RECSYS_REPORT | {"metrics": {"test": {"n": 60, "recall@10": 0.25, "ndcg@10": 0.125}}}
    md = render_report(report)
    assert "| split | rows | recall@10 | ndcg@10 |" in md and "| test | 60 | 0.2500 | 0.1250 |" in md


def test_a_short_recsys_run_lists_every_steps_loss_once():
    report = RECSYS_REPORT | {"fit": RECSYS_REPORT["fit"] | {"steps": 2, "loss_first": [1.35, 1.31],
                                                             "loss_last": [1.35, 1.31]}}
    assert "- training loss by step: 1.3500, 1.3100" in render_report(report)


def test_old_and_minimal_recsys_reports_render():
    for report in ({}, {"config": {"name": "old"}}, {"fit": {"steps": 0}}):
        md = render_report(report)
        assert md.startswith("# Run report: ") and "None" not in md and "## Training" not in md
