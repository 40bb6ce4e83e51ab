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
    from core.classify.config import load_recipe_file
    from core.classify.recipes import run_recipe
    from verticals.registry import RECIPES

    root = tmp_path_factory.mktemp("sentiment-run")
    rows = [("profit rose and sales increased", "positive"), ("shares fell after the loss", "negative"),
            ("the company is based in helsinki", "neutral")] * 8
    data = write_csv(root / "sentiment.csv", rows)
    cfg = load_recipe_file(RECIPES["finance/sentiment-full"], {"backbone": "tiny", "data": str(data),
                                                               "max_steps": "2", "eval_every": "1"},
                           name="finance/sentiment-full")
    run_recipe(cfg, root / "run", progress=False)
    return root / "run"


def demo_stream_dir() -> Path:
    from core.data.catalog import builtin_datasets_dir

    return builtin_datasets_dir() / "demo_finance_stream"


class VersionedKeywordModel(KeywordModel):
    """The keyword stub with a model version, as a registry-loaded model would carry."""

    model_version = "keyword-stub@test"


HOSTILE_TEXT = ('Acme Corp <img src=x onerror="window.__xss=1"> update <script>window.__xss=2</script>'
                ' \u202eslaes drocer\u202c')  # and a right-to-left override (visual spoofing)


@pytest.fixture(scope="session")
def dashboard_db(tmp_path_factory) -> Path:
    """The demo stream plus planted incidents (a HALO negative burst, an ORBT volume spike) and a
    document whose text is HTML, run through the monitor with the keyword stub: a real monitor DB."""
    import json

    from solutions.finance.monitor.loop import MonitorConfig, run_monitor

    root = tmp_path_factory.mktemp("dashboard")
    rows = [json.loads(line) for line in (demo_stream_dir() / "stream.jsonl").read_text().splitlines() if line]
    rows += [{"id": f"halo{i}", "ts": f"2026-03-05T10:{5 * i:02d}:00Z", "source": "forum",
              "text": f"Halo Semiconductors shares plunge as chip orders cut, post {i}"} for i in range(7)]
    rows += [{"id": f"orbt{i}", "ts": f"2026-03-06T15:{6 * i:02d}:00Z", "source": "newswire",
              "text": f"Orbit Logistics schedules investor call number {i}"} for i in range(9)]
    rows.append({"id": "html1", "ts": "2026-03-04T09:30:00Z", "source": "forum", "text": HOSTILE_TEXT})
    rows.sort(key=lambda r: r["ts"])
    stream = root / "stream.jsonl"
    stream.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = MonitorConfig(inputs=(str(stream),), db=root / "monitor.db", model="unused",
                        watchlist=demo_stream_dir() / "watchlist.yaml", sinks=(f"jsonl:{root / 'alerts.jsonl'}",),
                        drain_seconds=0)
    run_monitor(cfg, model=VersionedKeywordModel())
    return root / "monitor.db"
