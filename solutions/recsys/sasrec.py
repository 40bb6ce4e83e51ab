"""The SASRec-style network of the sequential recommender, its training step and its settings.

Model (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation"). A user's training
positives, oldest first, are a sequence of item ids; causal self-attention over the latest
`max_len` of them gives, at every position, a user state that scores every item by a dot product
with the item table. Each position is trained to put the next `target_window` items of the same
user (all of them, not only the very next one: the protocol's test window is a set of later
items) on top of a full softmax over the catalog (9.7k items on MovieLens: one [positions, items]
matmul, cheaper than sampling negatives and with no sampling bias). Positions count from the
latest item backwards, so the newest item always sits at position 0.

Item table = id embedding (only for items with training interactions) + a linear projection of
the item's text vector (content.embed_catalog), when text vectors are given. An item nobody has
interacted with has no id embedding, so its vector is its projected text: cold items are
rankable. Hand-written rather than RecBole's SASRec: that needs its own dataset/config/trainer
stack and would not train through our engine; the model itself is torch's TransformerEncoder.
Leaves out: fitting, scoring, saving and serving (solutions.recsys.sequential), side features
other than text, and negative sampling for catalogs too large for a full softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from core.foundation.errors import UserError


@dataclass(frozen=True)
class SequentialConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 100  # latest items of a history the model reads
    dropout: float = 0.2
    # each position predicts the next this many items of the user (8 beat 1 on ml-latest-small's validation cut)
    target_window: int = 8
    steps: int = 400  # cap on optimizer steps of the validated run
    batch_size: int = 64  # users per step (each a random crop of its history)
    loss_positions: int = 1024  # positions per step scored against the full catalog (random subset); 0 = all
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05
    validate_every: int = 50
    patience: int = 2  # validation passes without improvement before stopping
    max_seconds: float = 900.0  # wall-clock cap per training run
    refit: bool = True  # retrain on the full training histories for the best step count
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> SequentialConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown sequential setting '{unknown[0]}'; valid settings: {', '.join(sorted(known))}")
        return cls(**values)


class SASRec(nn.Module):
    """Item table + causal transformer. Row 0 of every item tensor is padding; item i is row i+1."""

    def __init__(self, n_items: int, cfg: SequentialConfig, has_id: torch.Tensor,
                 text_vectors: torch.Tensor | None = None):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise UserError(f"sequential dim ({cfg.dim}) must be a multiple of heads ({cfg.heads})")
        self.cfg, self.n_items = cfg, n_items
        self.item_ids = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item_ids.weight, std=cfg.dim ** -0.5)
        self.register_buffer("has_id", torch.cat([torch.zeros(1), has_id.float()]).unsqueeze(1))
        self.text_dim = 0 if text_vectors is None else int(text_vectors.shape[1])
        if text_vectors is not None:
            self.register_buffer("text", torch.cat([torch.zeros(1, self.text_dim), text_vectors.float()]))
            self.text_proj = nn.Linear(self.text_dim, cfg.dim, bias=False)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=2 * cfg.dim, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # no dropout on the attention weights: with it torch falls back to the unfused attention,
        # whose [B, heads, L, L] dropout mask was 40% of a CPU step; dropout stays on embeddings and FFN
        layer.self_attn.dropout = 0.0
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def project_text(self, text_vectors: torch.Tensor) -> torch.Tensor:
        return self.text_proj(text_vectors)

    def item_table(self) -> torch.Tensor:
        """[n_items + 1, dim]: id embedding where the item has training interactions, + projected text."""
        table = self.item_ids.weight * self.has_id
        return table + self.project_text(self.text) if self.text_dim else table

    def states(self, inputs: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """[B, L, dim] user states; `inputs` [B, L] are left-aligned (padding 0 after the items),
        so under the causal mask a real position never attends to padding."""
        steps = inputs.shape[1]
        ages = (lengths.unsqueeze(1) - 1 - torch.arange(steps, device=inputs.device)).clamp(min=0)
        x = self.drop(table[inputs] + self.positions(ages))
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=inputs.device), diagonal=1)
        return self.norm(self.blocks(x, mask=causal, is_causal=True))

    def user_vectors(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, dim]: the state at each sequence's latest item (zeros for an empty sequence)."""
        states = self.states(inputs, lengths.clamp(min=1), self.item_table())
        last = states[torch.arange(len(inputs)), (lengths - 1).clamp(min=0)]
        return last * (lengths > 0).unsqueeze(1)


class NextItemsStep(nn.Module):
    """Engine step: batch {"inputs" [B, L], "lengths" [B], "targets" [B, L, W]} -> mean cross-entropy
    of each target item (row index, 0 = none) under a full softmax at its position."""

    def __init__(self, model: SASRec):
        super().__init__()
        self.model = model

    def forward(self, batch) -> torch.Tensor:
        table = self.model.item_table()
        states = self.model.states(batch["inputs"], batch["lengths"], table)
        targets = batch["targets"]
        used = (targets > 0).any(dim=2)
        states, targets = states[used], targets[used]
        if "keep" in batch:  # a random subset of the positions: the [positions, items] softmax dominates the cost
            keep = batch["keep"][batch["keep"] < len(states)][:self.model.cfg.loss_positions]
            states, targets = states[keep], targets[keep]
        return next_items_loss(states, table[1:], targets - 1)


def next_items_loss(states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """states [P, d], items [N, d], targets [P, W] item columns (-1 = none) -> mean of -log softmax
    over the N items at each real target."""
    log_probs = torch.log_softmax(states @ items.T, dim=1)
    real = targets >= 0
    picked = log_probs.gather(1, targets.clamp(min=0))
    return -(picked * real).sum() / real.sum().clamp(min=1)


def training_batch(sequences: list[np.ndarray], users: np.ndarray, max_len: int, window: int,
                   rng: np.random.Generator, positions: int = 0) -> dict[str, torch.Tensor]:
    """Inputs/targets for the chosen users: a random crop of at most max_len + window items
    (augmentation for long histories), inputs = all but the last item, targets = the next
    `window` items after each input position, within the crop. `positions` > 0 adds "keep", a
    random order of the positions from which the step scores the first `positions` real ones."""
    crops = []
    for u in users:
        seq = sequences[u]
        span = min(len(seq), max_len + window)
        end = int(rng.integers(span, len(seq) + 1))
        crops.append(seq[end - span:end])
    steps = max(min(len(c) - 1, max_len) for c in crops)
    inputs = np.zeros((len(crops), steps), dtype=np.int64)
    targets = np.zeros((len(crops), steps, window), dtype=np.int64)
    lengths = np.zeros(len(crops), dtype=np.int64)
    for r, crop in enumerate(crops):
        n = min(len(crop) - 1, max_len)
        inputs[r, :n] = crop[:n]
        lengths[r] = n
        for w in range(window):
            ahead = crop[1 + w:n + 1 + w]
            targets[r, :len(ahead), w] = ahead
    out = {"inputs": torch.from_numpy(inputs), "lengths": torch.from_numpy(lengths),
           "targets": torch.from_numpy(targets)}
    if positions:  # a permutation of every possible position; the step keeps the first valid ones
        out["keep"] = torch.from_numpy(rng.permutation(len(crops) * steps))
    return out
