"""Finding a recipe by name or file, and the task that trains it.

`recipe_path(recipe, RECIPES)`: a recipe name of the app's list, or a YAML file (a user's own
recipe, or a run's config.yaml). `resolve_recipe(...)`: the YAML's `task:` (default
classification) -> that task's schema and runner (verticals.tasks.Task) from TASKS, the config
built with the overrides.
Leaves out: the lists themselves (verticals.registry) and the schema machinery (core.foundation.settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.settings import build_config, read_recipe
from verticals.tasks import DEFAULT_TASK, Task, task_named


def recipe_path(recipe: str | Path, recipes: Mapping[str, Path]) -> Path:
    """A recipe name from `recipes`, or a YAML file: a user's own recipe or a run's config.yaml."""
    recipe = str(recipe)
    if recipe.endswith((".yaml", ".yml")) or Path(recipe).is_file():
        return Path(recipe)
    if recipe not in recipes:
        raise UserError(f"unknown recipe '{recipe}'. Available recipes: {', '.join(sorted(recipes))} "
                        f"(see `verticals recipes`), or give a path to a recipe YAML file")
    return Path(recipes[recipe])


def resolve_recipe(recipe: str | Path, overrides: dict | None, recipes: Mapping[str, Path],
                   tasks: Mapping[str, Task]):
    """(validated config, runner) of a recipe name or YAML file plus `overrides` ({key: value}, keys
    as on the command line: `train.lr`, `lr`, `data`): the YAML's `task:` (default classification)
    picks the schema and the runner from `tasks` (the app layer's registry)."""
    path = recipe_path(recipe, recipes)
    raw = read_recipe(path)
    task = task_named(str(raw.get("task") or DEFAULT_TASK), tasks, f"recipe {path}")
    name = str(recipe) if str(recipe) in recipes else path.stem
    return build_config(task.schema, raw, overrides, name), task.runner
