"""verticals: domain NLP solutions (support, finance, recsys) on one shared fine-tuning core.

The app layer above `core` (the engine) and `solutions` (the domains): the console entry
(verticals.cli) and the registry of recipes, tasks, solution commands and data readers
(verticals.registry). Importing it installs the solutions' data readers into core's loaders, so
`load_classification("financial_phrasebank")` works after `import verticals`.
Leaves out: the Python API (train/load/predict objects), which comes with the app-layer issue.
"""

from verticals.registry import RECIPES, TASKS, install

install()

__all__ = ["RECIPES", "TASKS", "install"]
