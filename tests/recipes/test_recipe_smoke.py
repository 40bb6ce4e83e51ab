"""Recipe smoke: the real recipe files, tiny backbone, 2 steps, temp dir."""

import json

import numpy as np
import pytest

from core.classify.config import load_recipe_file
from core.models.classifier import PROBE_C_GRID, load_classifier
from core.classify.recipes import run_recipe
from verticals.registry import RECIPES

COST_KEYS = {"wall_seconds", "cpu_seconds", "peak_rss_mb", "trainable_params", "total_params",
             "train_samples_per_second", "tokens_seen"}


@pytest.mark.parametrize("name", ["support/intent-full", "support/intent-lora"])
def test_recipe_runs_on_tiny_backbone_and_writes_a_complete_run_dir(name, toy_dir, tmp_path):
    overrides = {"backbone": "tiny", "data": str(toy_dir), "max_steps": "2", "eval_every": "1", "log_every": "1"}
    cfg = load_recipe_file(RECIPES[name], overrides, name=name)
    run = tmp_path / "run"
    report = run_recipe(cfg, run, progress=False)

    for f in ("config.yaml", "metrics.jsonl", "report.json", "report.md", "loss_curve.png", "confusion_matrix.png"):
        assert (run / f).is_file(), f
    assert not (run / "checkpoint").exists()
    assert COST_KEYS <= set(report["cost"])
    assert report["cost"]["trainable_params"] < report["cost"]["total_params"] or cfg.model.peft == "none"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) for r in rows if "train_loss" in r)
    assert set(report["metrics"]) >= {"validation", "test"}
    assert all(p.suffix not in (".bin", ".pt", ".pkl") for p in (run / "model").rglob("*"))

    texts = ["my card was declined", "transfer to another bank"]
    model = load_classifier(run / "model")
    again = load_classifier(run / "model")
    np.testing.assert_allclose(model.predict_proba(texts), again.predict_proba(texts), atol=1e-6)
    assert report["metrics"]["test"]["n"] == 12


@pytest.mark.parametrize("name", ["support/intent-probe", "support/intent-fewshot", "support/intent-probe-mpnet"])
def test_probe_and_fewshot_recipes_on_tiny_backbone(name, toy_dir, tmp_path):
    overrides = {"backbone": "tiny", "data": str(toy_dir)}
    if name.endswith("fewshot"):
        overrides |= {"shots": "3", "contrastive_steps": "2", "contrastive_batch_size": "2", "max_steps": "2"}
    if name.endswith("mpnet"):
        overrides |= {"shots": "3"}
    report = run_recipe(load_recipe_file(RECIPES[name], overrides, name=name), tmp_path / "run", progress=False)
    if "probe" in name:
        assert report["fit"]["steps"] == 0 and report["fit"]["best_metric"] is None
        assert report["cost"]["trainable_params"] == 32 * 2 + 2  # the head only
    if name.endswith("fewshot"):
        assert report["data"]["train_used"] == 8  # 3 shots x 2 labels + the 2 label names
    if name.endswith("mpnet"):
        assert report["data"]["train_used"] == 8  # 3 shots x 2 labels + the 2 label names
        assert report["probe"]["c"] in PROBE_C_GRID and len(report["probe"]["validation_accuracy_by_c"]) == len(PROBE_C_GRID)
    assert load_classifier(tmp_path / "run" / "model").predict_proba(["card declined"]).shape == (1, 2)


def test_train_limit_uses_a_fixed_subset(toy_dir, tmp_path):
    cfg = load_recipe_file(RECIPES["support/intent-lora"],
                           {"backbone": "tiny", "data": str(toy_dir), "max_steps": "1", "train_limit": "10"})
    report = run_recipe(cfg, tmp_path / "run", progress=False)
    assert report["data"]["train_used"] == 10 and report["cost"]["train_samples"] == 10


def test_rows_labelled_oos_are_never_a_class_and_are_evaluated_as_out_of_scope(tmp_path):
    from tests.conftest import CARD, TRANSFER, write_csv

    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]
    oos = [("what is the weather tomorrow", "oos"), ("play some jazz music", "oos"), ("tell me a joke", "oos")]
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "train.csv", rows * 3 + oos)
    write_csv(tmp_path / "data" / "validation.csv", rows + oos)
    write_csv(tmp_path / "data" / "test.csv", rows + oos[:2])
    cfg = load_recipe_file(RECIPES["support/intent-lora"],
                           {"backbone": "tiny", "data": str(tmp_path / "data"), "max_steps": "2"})
    report = run_recipe(cfg, tmp_path / "run", progress=False)
    assert report["labels"] == ["card", "transfer"]
    assert report["data"]["out_of_scope_rows_set_aside"] == {"train": 3, "validation": 3, "test": 2}
    assert report["metrics"]["test"]["n"] == len(rows)
    test_oos = report["confidence"]["out_of_scope_oos_test"]
    assert test_oos["n_out_of_scope"] == 2 and 0.0 <= test_oos["auroc"] <= 1.0
    assert report["confidence"]["out_of_scope_oos_validation"]["n_out_of_scope"] == 3

    from core.classify.scoring import evaluate_run

    result = evaluate_run(tmp_path / "run", str(tmp_path / "data" / "test.csv"))  # a file: every row
    assert result["n"] == len(rows) and result["out_of_scope"]["oos"]["n_out_of_scope"] == 2
    result = evaluate_run(tmp_path / "run")  # its own test split, out-of-scope rows set aside as in training
    assert result["evaluated"] == f"test split of data: {len(rows)} rows + out-of-scope 'oos_test' 2 rows"
    again = result["out_of_scope"]["oos_test"]
    # same rows as the report's; recalls may move by one row: test == validation rows here, so a score
    # sits exactly on the threshold, and the reloaded (LoRA-merged) model differs in the last bits
    assert again["n_out_of_scope"] == 2 and again["auroc"] == pytest.approx(test_oos["auroc"], abs=1e-6)
    result = evaluate_run(tmp_path / "run", split="validation")
    assert list(result["out_of_scope"]) == ["oos_validation"] and result["out_of_scope"]["oos_validation"]["n_out_of_scope"] == 3
