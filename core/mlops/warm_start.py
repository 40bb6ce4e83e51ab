"""How a retrain starts its challenger from the champion: new head rows, trainable adapters, a schedule.

`grow_head` appends a head row per new label by imprinting (Qi et al. 2018, "Low-shot learning
with imprinted weights"): the direction from the mix's mean embedding to the new class's mean,
scaled to the mean norm of the existing rows; centred, because sentence embeddings share one
dominant direction, so an uncentred class mean would score every text high. A row belongs to a
class when the class is among its labels, so the same rows start a softmax head (one label per row)
and a per-label sigmoid head (several). `make_trainable` unfreezes a loaded LoRA/IA3 adapter;
`train_schedule` is the challenger's TrainConfig.
Leaves out: what the challenger learns from (core.mlops.retrain_plan) and the retrains themselves
(core.mlops.retrain, core.mlops.retrain_multilabel).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from core.mlops.retrain_plan import RetrainSettings
from core.models.classifier import ADAPTERS


def imprinted_rows(class_embeddings: list[np.ndarray], background: np.ndarray, scale: float,
                   bias: float) -> tuple[np.ndarray, np.ndarray]:
    """Head rows (weight [k, d], bias [k]) for k new classes: w = scale * unit(mean_c - mean_bg),
    b = bias - w . mean_bg, so a text's logit is scale * cos-direction . (x - mean_bg) + bias."""
    centre = np.asarray(background, dtype=np.float64).mean(axis=0)
    weights = []
    for emb in class_embeddings:
        direction = np.asarray(emb, dtype=np.float64).mean(axis=0) - centre
        weights.append(scale * direction / max(np.linalg.norm(direction), 1e-12))
    w = np.stack(weights) if weights else np.zeros((0, len(centre)))
    return w.astype(np.float32), (bias - w @ centre).astype(np.float32)


def grow_head(model, new_labels: list[str], texts: list[str], label_sets: list[tuple[str, ...]], device: str) -> None:
    """Append head rows for `new_labels`, imprinted from the `texts` whose `label_sets` hold them
    (see imprinted_rows); a single-label split passes one-label tuples."""
    import torch  # lazy: torch costs seconds of start-up
    from torch import nn  # lazy: torch costs seconds of start-up

    if not new_labels:
        return
    emb = model.encode(texts, device=device)
    old_w, old_b = model.head.weight.detach().cpu().numpy(), model.head.bias.detach().cpu().numpy()
    members = [emb[[label in names for names in label_sets]] for label in new_labels]
    w, b = imprinted_rows(members, emb, float(np.linalg.norm(old_w, axis=1).mean()), float(np.median(old_b)))
    head = nn.Linear(old_w.shape[1], len(old_b) + len(new_labels))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.vstack([old_w, w])))
        head.bias.copy_(torch.from_numpy(np.concatenate([old_b, b])))
    model.head = head.to(model.head.weight.device)
    model.labels = list(model.labels) + list(new_labels)


def make_trainable(model) -> None:
    """A loaded LoRA/IA3 adapter is frozen (peft loads for inference): make its weights train again."""
    if model.peft in ADAPTERS:
        prefix = model.encoder.base_model.prefix  # "lora_" / "ia3_"
        for name, p in model.encoder.named_parameters():
            if prefix in name:
                p.requires_grad_(True)


def train_schedule(train_cfg, settings: RetrainSettings, mix_rows: int, original_rows: int):
    """The TrainConfig of the challenger: `settings.steps` when given, else the recipe's max_steps
    scaled by mix / original training rows, else its epochs over the mix."""
    if settings.steps:
        return replace(train_cfg, max_steps=settings.steps, seed=settings.seed)
    if train_cfg.max_steps:
        steps = max(1, math.ceil(train_cfg.max_steps * mix_rows / max(original_rows, 1)))
        return replace(train_cfg, max_steps=steps, seed=settings.seed)
    return replace(train_cfg, seed=settings.seed)
