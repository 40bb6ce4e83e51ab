"""Domain solutions built on `core`: finance, support, recsys. No solution imports another.

RECIPES is the one explicit list the CLI reads: recipe name -> YAML file (no module scanning).
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent

RECIPES = {
    "support/intent-full": _HERE / "support" / "recipes" / "intent-full.yaml",
    "support/intent-lora": _HERE / "support" / "recipes" / "intent-lora.yaml",
    "support/intent-demo": _HERE / "support" / "recipes" / "intent-demo.yaml",
    "support/intent-probe": _HERE / "support" / "recipes" / "intent-probe.yaml",
    "support/intent-fewshot": _HERE / "support" / "recipes" / "intent-fewshot.yaml",
    "support/intent-probe-mpnet": _HERE / "support" / "recipes" / "intent-probe-mpnet.yaml",
    "finance/sentiment-full": _HERE / "finance" / "recipes" / "sentiment-full.yaml",
    "finance/sentiment-lora": _HERE / "finance" / "recipes" / "sentiment-lora.yaml",
}
