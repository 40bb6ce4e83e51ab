"""The app layer's lists: recipes, solution subcommands, tasks and data readers, as plain dicts.

Everything a name in a YAML or on the command line can pick is listed here, explicitly (no module
scanning, no register-on-import): RECIPES (recipe name -> YAML file), SOLUTION_CLIS (modules whose
`register(subparsers)` adds a solution's subcommands), TASKS (a YAML's `task:` -> its config
schema and the runner that trains it) and SOLUTION_READERS (data card format types the solutions
read), which `install()` adds to core.data.catalog.READERS. core/ never imports this module: the CLI and
the API pass these dicts down.
Leaves out: the commands themselves (verticals.commands, the solutions' cli modules) and the recipes' code.
"""

from __future__ import annotations

from pathlib import Path

import core.data.catalog
import solutions
from core.classify.config import RecipeConfig
from solutions.finance import cli as finance_cli
from solutions.finance.data import READERS as FINANCE_READERS
from solutions.recsys import cli as recsys_cli
from solutions.recsys.recipe_config import ItemEncoderRecipe
from solutions.support import cli as support_cli

SOLUTIONS_DIR = Path(solutions.__file__).resolve().parent


def _recipe(solution: str, name: str) -> Path:
    return SOLUTIONS_DIR / solution / "recipes" / f"{name}.yaml"


RECIPES: dict[str, Path] = {
    "support/intent-full": _recipe("support", "intent-full"),
    "support/intent-lora": _recipe("support", "intent-lora"),
    "support/intent-demo": _recipe("support", "intent-demo"),
    "support/intent-probe": _recipe("support", "intent-probe"),
    "support/intent-fewshot": _recipe("support", "intent-fewshot"),
    "support/intent-probe-mpnet": _recipe("support", "intent-probe-mpnet"),
    "support/intent-zeroshot": _recipe("support", "intent-zeroshot"),
    "finance/sentiment-full": _recipe("finance", "sentiment-full"),
    "finance/sentiment-lora": _recipe("finance", "sentiment-lora"),
    "recsys/item-encoder": _recipe("recsys", "item-encoder"),
}

# Each module's `register(subparsers)` adds its subcommands; they import only argparse and
# core.foundation.errors at load time (heavy imports stay inside the command functions).
SOLUTION_CLIS = (support_cli, finance_cli, recsys_cli)

def train_classifier(cfg, run_dir: Path, **options) -> dict:
    """The classification runner (core.classify.recipes.run_recipe)."""
    from core.classify.recipes import run_recipe  # lazy: loads torch; the console entry imports this module

    return run_recipe(cfg, run_dir, **options)


def train_item_encoder(cfg, run_dir: Path, **options) -> dict:
    """The recsys item-encoder runner (solutions.recsys.recipe.train_item_encoder)."""
    from solutions.recsys.recipe import train_item_encoder as run  # lazy: loads torch, as above

    return run(cfg, run_dir, **options)


# A YAML's `task:` (default classification) -> (config schema, runner). A runner is
# `runner(cfg, run_dir, *, data_dir, resume, overwrite, progress) -> report dict`.
TASKS: dict[str, tuple[type, object]] = {
    "classification": (RecipeConfig, train_classifier),
    "recsys-item-encoder": (ItemEncoderRecipe, train_item_encoder),
}

# Data card `format.type` -> reader, for the formats a solution reads (core reads csv itself).
SOLUTION_READERS = (FINANCE_READERS,)


def install() -> None:
    """Let core's loaders read the solutions' card formats (idempotent)."""
    for readers in SOLUTION_READERS:
        core.data.catalog.READERS.update(readers)
