"""Which process am I: rank, world size and a barrier, for code that runs under torchrun/accelerate.

`verticals train ... --nproc N` (or `torchrun --nproc_per_node N`, or `accelerate launch`) starts N
copies of the same command; the launcher sets RANK / WORLD_SIZE / LOCAL_RANK in each. Every
process trains (core.engine.loop wraps accelerate for that); only the main process (rank 0) writes the
run directory, and the others wait at `barrier()` where they must not run ahead of it.

These helpers read the launcher's environment and torch.distributed's state only, so they are
correct before the engine has started (e.g. while a recipe claims its run directory) and cost
nothing in a single process. Leaves out: the process group itself (accelerate starts it).
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True in a single process and in the rank-0 process of a distributed run."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process or before the group exists)."""
    import torch.distributed as dist  # lazy: torch costs seconds of start-up

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
