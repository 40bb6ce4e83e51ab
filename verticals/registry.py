"""The app layer's lists: recipes, the demo, solution subcommands, tasks and data readers, as plain dicts.

Everything a name in a YAML or on the command line can pick is listed here, explicitly (no module
scanning, no register-on-import): RECIPES (recipe name -> YAML file), DEMO_RECIPE (what `verticals
demo` trains), SOLUTION_CLIS (modules whose `register(subparsers)` adds a solution's subcommands),
TASKS (a YAML's `task:`, a report's `config.task` -> verticals.tasks.Task: its config schema,
runner, report renderer, export and what `verticals.load` opens) and SOLUTION_READERS (data card
format types the solutions read), which `install()` adds to core.data.catalog.READERS. core/ never
imports this module: the CLI and the API pass these down.
Leaves out: the commands themselves (verticals.commands, the solutions' cli modules) and the recipes' code.
"""

from __future__ import annotations

from pathlib import Path

import core.data.catalog
import solutions
from core.classify.config import RecipeConfig
from core.classify.multilabel_config import TASK as MULTILABEL_TASK
from core.classify.multilabel_config import MultiLabelRecipeConfig
from core.classify.multilabel_report import MULTILABEL_REPORT
from core.classify.report import CLASSIFICATION_REPORT
from core.foundation.errors import UserError
from solutions.finance import cli as finance_cli
from solutions.finance.data import READERS as FINANCE_READERS
from solutions.recsys import cli as recsys_cli
from solutions.recsys.als_report import ALS_REPORT
from solutions.recsys.ease_report import EASE_REPORT
from solutions.recsys.export import write_encoder
from solutions.recsys.recipe_config import ALSRecipe, EASERecipe, ItemEncoderRecipe, SetRecipe
from solutions.recsys.report import ITEM_ENCODER_REPORT
from solutions.recsys.set_report import SET_REPORT
from solutions.support import cli as support_cli
from verticals.recommender import open_encoder_run
from verticals.run import Run
from verticals.tasks import Task

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
    "support/intent-multilabel": _recipe("support", "intent-multilabel"),
    "support/intent-static": _recipe("support", "intent-static"),
    "finance/sentiment-full": _recipe("finance", "sentiment-full"),
    "finance/sentiment-lora": _recipe("finance", "sentiment-lora"),
    "finance/sentiment-static": _recipe("finance", "sentiment-static"),
    "recsys/item-encoder": _recipe("recsys", "item-encoder"),
    "recsys/als": _recipe("recsys", "als"),
    "recsys/ease": _recipe("recsys", "ease"),
    "recsys/set": _recipe("recsys", "set"),
}
DEMO_RECIPE = "support/intent-demo"  # what `verticals demo` trains: the first job a new user runs

# Each module's `register(subparsers)` adds its subcommands; they import only light modules at load
# time (no torch, no web framework: heavy imports stay inside the command functions, with a reason).
SOLUTION_CLIS = (support_cli, finance_cli, recsys_cli)


def train_classifier(cfg, run_dir: Path, **options) -> dict:
    """The classification runner (core.classify.recipes.run_recipe)."""
    from core.classify.recipes import run_recipe  # lazy: loads torch; the console entry imports this module

    return run_recipe(cfg, run_dir, **options)


def train_multilabel(cfg, run_dir: Path, **options) -> dict:
    """The multi-label classification runner (core.classify.multilabel.train_multilabel)."""
    from core.classify.multilabel import train_multilabel as run  # lazy: loads torch, as above

    return run(cfg, run_dir, **options)


def train_item_encoder(cfg, run_dir: Path, **options) -> dict:
    """The recsys item-encoder runner (solutions.recsys.recipe.train_item_encoder)."""
    from solutions.recsys.recipe import train_item_encoder as run  # lazy: loads torch, as above

    return run(cfg, run_dir, **options)


def train_als(cfg, run_dir: Path, **options) -> dict:
    """The recsys ALS runner (solutions.recsys.als_recipe.train_als)."""
    from solutions.recsys.als_recipe import train_als as run  # lazy: loads implicit, scipy and torch, as above

    return run(cfg, run_dir, **options)


def train_ease(cfg, run_dir: Path, **options) -> dict:
    """The recsys EASE runner (solutions.recsys.ease_recipe.train_ease)."""
    from solutions.recsys.ease_recipe import train_ease as run  # lazy: loads scipy and the FAISS wrapper, as above

    return run(cfg, run_dir, **options)


def train_set(cfg, run_dir: Path, **options) -> dict:
    """The recsys set-autoencoder runner (solutions.recsys.set_recipe.train_set)."""
    from solutions.recsys.set_recipe import train_set as run  # lazy: loads torch, as above

    return run(cfg, run_dir, **options)


def not_for_set(*args, **kwargs):
    raise UserError("a set-autoencoder run has item vectors, not a text model: serve it with `verticals recsys index "
                    "RUN --out INDEX_DIR` and `verticals recsys serve INDEX_DIR`")


def not_for_ease(*args, **kwargs):
    raise UserError("an EASE run has an item-item matrix, not a text model: serve it with `verticals recsys index "
                    "RUN --out INDEX_DIR` and `verticals recsys serve INDEX_DIR`")


def not_for_als(*args, **kwargs):
    raise UserError("an ALS run has item factors, not a text model: serve it with `verticals recsys index DATA "
                    "--model RUN --out INDEX_DIR` and `verticals recsys serve INDEX_DIR`")


def export_classifier(run_dir: Path, report: dict, directory: Path) -> None:
    """A classification run's transformers directory (core.export.hub.write_classifier_run)."""
    from core.export.hub import write_classifier_run  # lazy: loads torch and transformers, as above

    write_classifier_run(run_dir, report, directory)


TASKS: dict[str, Task] = {
    "classification": Task(schema=RecipeConfig, runner=train_classifier, report=CLASSIFICATION_REPORT,
                           export_model=export_classifier, open_run=Run),
    MULTILABEL_TASK: Task(schema=MultiLabelRecipeConfig, runner=train_multilabel, report=MULTILABEL_REPORT,
                          export_model=export_classifier, open_run=Run),
    "recsys-item-encoder": Task(schema=ItemEncoderRecipe, runner=train_item_encoder, report=ITEM_ENCODER_REPORT,
                                export_model=write_encoder, open_run=open_encoder_run),
    "recsys-als": Task(schema=ALSRecipe, runner=train_als, report=ALS_REPORT, export_model=not_for_als,
                       open_run=not_for_als),
    "recsys-ease": Task(schema=EASERecipe, runner=train_ease, report=EASE_REPORT, export_model=not_for_ease,
                        open_run=not_for_ease),
    "recsys-set": Task(schema=SetRecipe, runner=train_set, report=SET_REPORT, export_model=not_for_set,
                       open_run=not_for_set),
}

# Data card `format.type` -> reader, for the formats a solution reads (core reads csv itself).
SOLUTION_READERS = (FINANCE_READERS,)


def install() -> None:
    """Let core's loaders read the solutions' card formats (idempotent)."""
    for readers in SOLUTION_READERS:
        core.data.catalog.READERS.update(readers)
