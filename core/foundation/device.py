"""The device and the seeds of a run, resolved once at its entry and passed down.

`resolve_device("auto" | "cpu" | "cuda")` -> the torch device name a run uses; `seed_everything`
seeds Python's, NumPy's and torch's global generators for an entry point (a recipe, a benchmark),
never from library code, and returns the seed for the report.
"""

from __future__ import annotations

import random

import numpy as np

from core.foundation.errors import UserError


def resolve_device(name: str) -> str:
    import torch  # lazy: torch costs seconds of start-up, and the CLI imports this module to parse

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible to torch; use device=cpu or device=auto")
    return name


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch global RNGs (entry points only, never library code)."""
    import torch  # lazy: see resolve_device

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed
