"""Finance fixtures: a keyword stub sentiment model (exact, instant) and a real tiny trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_csv

NEGATIVE_WORDS = ("probe", "investigation", "halt", "plunge", "down", "downgrade", "loss", "quits",
                  "withdraw", "bad", "trouble", "panick", "suspends", "falls", "cut")
POSITIVE_WORDS = ("rise", "beats", "record", "up ", "raises", "wins", "growth")


class KeywordModel:
    """Sentiment stub: a negative word -> 0.8 negative; a positive word -> 0.8 positive; else neutral."""

    labels = ["negative", "neutral", "positive"]

    def predict_proba(self, texts, batch_size=64):
        rows = []
        for text in texts:
            low = text.lower()
            if any(w in low for w in NEGATIVE_WORDS):
                rows.append([0.8, 0.15, 0.05])
            elif any(w in low for w in POSITIVE_WORDS):
                rows.append([0.05, 0.15, 0.8])
            else:
                rows.append([0.1, 0.8, 0.1])
        return np.array(rows).reshape(-1, 3)


@pytest.fixture
def keyword_model():
    return KeywordModel()


@pytest.fixture(scope="session")
def tiny_sentiment_run(tmp_path_factory) -> Path:
    """finance/sentiment-full trained 2 steps on the tiny backbone: a real, loadable run dir."""
    from core.config import load_recipe_file
    from core.recipes import run_classification
    from verticals.registry import RECIPES

    root = tmp_path_factory.mktemp("sentiment-run")
    rows = [("profit rose and sales increased", "positive"), ("shares fell after the loss", "negative"),
            ("the company is based in helsinki", "neutral")] * 8
    data = write_csv(root / "sentiment.csv", rows)
    cfg = load_recipe_file(RECIPES["finance/sentiment-full"], {"backbone": "tiny", "data": str(data),
                                                               "max_steps": "2", "eval_every": "1"},
                           name="finance/sentiment-full")
    run_classification(cfg, root / "run", progress=False)
    return root / "run"


def demo_stream_dir() -> Path:
    from core.data import builtin_datasets_dir

    return builtin_datasets_dir() / "demo_finance_stream"
