"""Domain solutions built on `core`: finance, support, recsys. No solution imports another.

Each solution keeps its recipe YAMLs under `<solution>/recipes/`; the app layer lists them
(verticals.registry.RECIPES), so nothing here is scanned or registered on import.
"""
