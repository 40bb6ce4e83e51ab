"""Finance recipes: every YAML validates; the LoRA recipe runs on the tiny backbone and its saved
model scores sentiment the same after reload (the full recipe runs in the `tiny_sentiment_run` fixture)."""

import numpy as np
import pytest

from core.classify.config import load_recipe_file
from core.models.classifier import load_classifier
from core.classify.recipes import run_recipe
from verticals.registry import RECIPES
from solutions.finance.sentiment import score_texts
from tests.conftest import write_csv

FINANCE = sorted(name for name in RECIPES if name.startswith("finance/"))


@pytest.mark.parametrize("name", FINANCE)
def test_finance_recipe_validates_and_reads_phrasebank(name):
    cfg = load_recipe_file(RECIPES[name], name=name)
    assert cfg.data.source == "financial_phrasebank" and cfg.model.backbone == "minilm"


def test_lora_recipe_trains_and_reloads_to_the_same_scores(tmp_path):
    rows = [("profit rose and sales increased", "positive"), ("shares fell after the loss", "negative"),
            ("the company is based in helsinki", "neutral")] * 8
    overrides = {"backbone": "tiny", "data": str(write_csv(tmp_path / "s.csv", rows)), "max_steps": "2",
                 "eval_every": "1"}
    cfg = load_recipe_file(RECIPES["finance/sentiment-lora"], overrides, name="finance/sentiment-lora")
    report = run_recipe(cfg, tmp_path / "run", progress=False)
    assert report["labels"] == ["negative", "neutral", "positive"]
    texts = ["profit rose", "shares fell"]
    first = score_texts(load_classifier(tmp_path / "run" / "model"), texts).score
    second = score_texts(load_classifier(tmp_path / "run" / "model"), texts).score
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert np.all(np.abs(first) <= 1)


def test_the_full_recipe_run_loads_as_a_monitor_scorer(tiny_sentiment_run):
    from solutions.finance.monitor.loop import load_scorer

    model = load_scorer(str(tiny_sentiment_run))
    assert model.labels == ["negative", "neutral", "positive"]
