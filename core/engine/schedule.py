"""The optimizer and learning-rate schedule of every engine run: fused AdamW and a warm-up schedule.

Hand-written: the two schedules are transformers' `get_linear_schedule_with_warmup` and
`get_constant_schedule_with_warmup`, the same multipliers step for step and the same LambdaLR state
(a `functools.partial` each, so checkpoints written with either load into the other). Importing
`transformers.optimization` for them pulls in its Trainer utilities and peft, a fifth to two fifths
of a second of every fit (profiled on the BANKING77 fine-tune of benchmarks/engine_speed.py), for
two one-line formulas.
Leaves out: the loop that steps them (core.engine.loop) and the parameter groups (the trainers').
"""

from __future__ import annotations

from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR


def linear_with_warmup(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    """The learning-rate multiplier at `step`: 0 -> 1 over the warm-up, then 1 -> 0 at `num_training_steps`."""
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))


def constant_with_warmup(step: int, *, num_warmup_steps: int) -> float:
    """The learning-rate multiplier at `step`: 0 -> 1 over the warm-up, then 1."""
    if step < num_warmup_steps:
        return float(step) / float(max(1.0, num_warmup_steps))
    return 1.0


def optimizer_and_schedule(param_groups: list[dict], settings) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over `param_groups` and its warm-up schedule over `settings.steps` (a core.engine.loop.LoopSettings:
    `warmup` the fraction of steps, `schedule` linear decay to 0 or constant)."""
    # fused AdamW (one kernel for all tensors) is about 5x faster per step than the default
    # on CPU for MiniLM's 22.7M weights; the Trainer uses it too (transformers 5 default)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in param_groups for p in g["params"])
    optimizer = torch.optim.AdamW(param_groups, fused=fused)
    total = max(settings.steps, 1)
    warmup = int(settings.warmup * total)
    multiplier = (partial(linear_with_warmup, num_warmup_steps=warmup, num_training_steps=total)
                  if settings.schedule == "linear" else partial(constant_with_warmup, num_warmup_steps=warmup))
    return optimizer, LambdaLR(optimizer, multiplier)
