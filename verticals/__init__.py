"""verticals: domain NLP solutions (support, finance, recsys) on one shared fine-tuning core.

The app layer above `core` (the engine, which knows no domain) and `solutions` (the domains):
the Python API (verticals.api and the objects it returns: verticals.run, verticals.recommender,
verticals.monitor), the console entry (verticals.cli) and the registry of recipes, tasks,
solution commands and data readers (verticals.registry, verticals.tasks). Importing it installs the
solutions' data readers into core's loaders.

    import verticals
    run = verticals.train("support/intent-demo", out="runs/demo")
    run.predict(["I lost my card"])
    verticals.load("runs/demo").evaluate()

Public API: train, load, plan, retrain, open_registry, Run, EncoderRun, index, monitor, Monitor, recipes, RECIPES, and the
trained-model contract (Predictor, OutOfScopeDetector, load_run) from core.
"""

from core.confidence.ood import OutOfScopeDetector
from core.foundation.errors import UserError
from core.foundation.settings import read_recipe
from core.models.predictor import Predictor, load_run
from verticals.api import load, monitor, open_registry, plan, retrain, train
from verticals.monitor import Monitor
from verticals.recommender import EncoderRun, index
from verticals.registry import RECIPES, TASKS, install
from verticals.run import Run

install()


def recipes() -> dict[str, str]:
    """{recipe name: description} of the packaged recipes."""
    return {name: str(read_recipe(path).get("description", "")) for name, path in sorted(RECIPES.items())}


__all__ = ["RECIPES", "TASKS", "EncoderRun", "Monitor", "OutOfScopeDetector", "Predictor", "Run", "UserError",
           "index", "install", "load", "load_run", "monitor", "plan", "open_registry", "recipes", "retrain", "train"]
