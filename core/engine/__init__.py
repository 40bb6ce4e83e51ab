"""The training engine: the one optimisation loop, its checkpoints, and the methods it calls.

Owns: `loop` (Engine, LoopSettings, decay_groups), `schedule` (AdamW and its warm-up schedule),
`metrics_log` (metrics.jsonl), `checkpoint` (safetensors checkpoints, resume), `adversarial`
(FGM/PGD), `ema`, `layerwise` (LLRD, gradual unfreezing), `contrastive` (in-batch negatives
with sentence-transformers' loss). A trainer is a step object the loop runs; nothing here knows
classification, a recipe or a run report.
May import: core.foundation.
"""
