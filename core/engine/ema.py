"""Exponential moving average (EMA) of the trainable weights, the 'Polyak averaging' stabiliser.

After every optimizer step: shadow <- d * shadow + (1 - d) * weight, with the warm-up
d_t = min(decay, (1 + t) / (10 + t)) (as TensorFlow's ExponentialMovingAverage with num_updates),
so early shadows are not dominated by the initial weights. core.classify.train.fit evaluates validation
with the shadow weights swapped in (`applied()`), so the best checkpoint it keeps, and the model it
saves, are the EMA weights. Only trainable tensors are averaged (the head and the encoder, or the
LoRA/IA3 adapters and the head). Leaves out: EMA of buffers (BERT has none that train).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for name, p in self.params.items():
            self.shadow[name].mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1

    @contextmanager
    def applied(self):
        """Swap the shadow weights into the model for the block, then swap the raw ones back."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for name, p in self.params.items():
            raw = p.detach().clone()
            p.copy_(self.shadow[name])
            self.shadow[name].copy_(raw)

    def state(self) -> dict[str, torch.Tensor]:
        """For checkpoints (safetensors): the shadow tensors plus the update count."""
        return {**{f"shadow.{n}": t.contiguous() for n, t in self.shadow.items()},
                "updates": torch.tensor(self.updates)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[f"shadow.{name}"])
        self.updates = int(state["updates"])
