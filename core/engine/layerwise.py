"""Layer-wise fine-tuning methods: discriminative learning rates (layer-wise LR decay) and gradual
unfreezing (Howard & Ruder 2018, ULMFiT; LLRD as in ELECTRA and Sun et al. 2019).

Both need a parameter's depth. `layer_index(name, num_layers)`: embeddings 0, transformer block i
-> i + 1, anything else in the encoder (the pooler) -> num_layers, the head -> None. The same
names hold for LoRA/IA3 adapters (`...encoder.layer.3.attention.self.query.lora_A...`), so both
methods apply to adapters too.

- Layer-wise LR decay: depth d trains at lr * decay ** (num_layers - d): the top block at lr, the
  embeddings at lr * decay ** num_layers; the head keeps its own head_lr.
- Gradual unfreezing: for the first `every` optimizer steps only the head trains; then each
  `every` steps one more block joins, top down, the embeddings last. It drops the gradients of
  the still-frozen tensors before the step (AdamW skips a tensor without a gradient, and clipping
  ignores it) instead of toggling requires_grad, so checkpoints and the best-weights copy always
  hold every tensor that will train. The price: backward still runs through frozen blocks.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def layer_index(name: str, num_layers: int) -> int | None:
    if name.startswith("head."):
        return None
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if "embeddings" in name:
        return 0
    return num_layers


def lr_scale(name: str, num_layers: int, decay: float) -> float:
    """Multiplier of the encoder learning rate for a parameter (1 for the head and the top)."""
    depth = layer_index(name, num_layers)
    return 1.0 if depth is None else decay ** (num_layers - min(depth, num_layers))


class GradualUnfreezing:
    """Call `drop_frozen_grads(step)` between backward and the optimizer step (step = optimizer
    steps already taken)."""

    def __init__(self, model, num_layers: int, every: int):
        if every < 1:
            raise ValueError(f"gradual unfreezing needs every >= 1, got {every}")
        self.every, self.num_layers = every, num_layers
        self.by_depth: dict[int, list] = {}
        for name, p in model.named_parameters():
            depth = layer_index(name, num_layers)
            if p.requires_grad and depth is not None:
                self.by_depth.setdefault(min(depth, num_layers), []).append(p)
        self.top_down = sorted(self.by_depth, reverse=True)

    def trainable_depths(self, step: int) -> set[int]:
        """Depths whose tensors train at this step: none at first, then the top ones."""
        stage = step // self.every  # 0: head only; k: the k deepest-numbered (top) depths
        return set(self.top_down[:stage])

    def drop_frozen_grads(self, step: int) -> None:
        open_depths = self.trainable_depths(step)
        for depth, params in self.by_depth.items():
            if depth not in open_depths:
                for p in params:
                    p.grad = None
