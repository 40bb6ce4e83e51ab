"""Contrastive training on the engine: in-batch negatives with sentence-transformers' own parts.

Three trainers learn sentence embeddings from pairs: the few-shot phase (two texts of one class,
core.classify.fewshot), SimCSE adaptation (a text and itself under another dropout mask, core.adapt.simcse) and
the recsys item encoder (two items consumed together, solutions.recsys.finetune). They share:

- the loss: sentence-transformers' `MultipleNegativesRankingLoss`, fed our embeddings through its
  `compute_loss_from_embeddings` (each anchor against every positive of the batch, cross-entropy
  on scale x cosine; `symmetric` adds positives -> anchors, its "per_direction" mode). Under
  several processes it gathers every process's embeddings first (`gather_across_devices`), so the
  negatives are the global batch, as in one process;
- the batches: sentence-transformers' `NoDuplicatesBatchSampler`: no value (a text, an item, a
  class name - every column of the row) twice in a batch, because a duplicate would be scored
  as its own negative (sentence-transformers #3189). It reads a Hugging Face `datasets.Dataset`;
- `PairStep`: the engine step, `forward((anchors, positives))` -> loss, where each side is a
  tokenised batch and `embed(input_ids, attention_mask)` is the model's own pooled embedding.

Leaves out: hard negatives, cached (GradCache) losses, and the trainers' own pair mining.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from core.engine.loop import shard
from core.foundation import distributed


def mnrl(scale: float = 20.0, symmetric: bool = False):
    """sentence-transformers' MultipleNegativesRankingLoss, used through compute_loss_from_embeddings
    (no SentenceTransformer object needed: the model argument is only read by its forward)."""
    try:
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,  # lazy: sentence-transformers pulls in torch
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import (
            MultipleNegativesRankingLoss,  # lazy: sentence-transformers pulls in torch
        )
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    return MultipleNegativesRankingLoss(None, scale=scale, gather_across_devices=distributed.is_distributed(),
                                        directions=directions,
                                        partition_mode="per_direction" if symmetric else "joint")


class PairStep(nn.Module):
    """(anchor batch, positive batch) -> in-batch-negatives loss. `embedder` is the module being
    trained (it must be a submodule so the engine's DDP wrapper sees its parameters); `embed` is
    how it turns input_ids + attention_mask into sentence embeddings."""

    def __init__(self, embedder: nn.Module, embed: Callable[..., torch.Tensor], *, scale: float = 20.0,
                 symmetric: bool = False):
        super().__init__()
        self.embedder = embedder
        self._embed = embed
        self.loss = mnrl(scale, symmetric)

    def forward(self, batch) -> torch.Tensor:
        anchors, positives = batch
        a = self._embed(input_ids=anchors["input_ids"], attention_mask=anchors["attention_mask"])
        p = self._embed(input_ids=positives["input_ids"], attention_mask=positives["attention_mask"])
        return self.loss.compute_loss_from_embeddings([a, p], None)


def no_duplicate_batches(columns: dict[str, list], batch_size: int, n_batches: int, seed: int) -> list[list[int]]:
    """`n_batches` batches of row indices in which no value of any column appears twice, by
    sentence-transformers' NoDuplicatesBatchSampler; each pass over the rows is a new seeded
    shuffle (its `set_epoch`). Fewer batches when the rows cannot fill one (too few distinct values)."""
    from sentence_transformers.base.sampler import (
        NoDuplicatesBatchSampler,  # lazy: sentence-transformers pulls in torch
    )

    from datasets import Dataset  # lazy: Hugging Face datasets costs start-up; only when used

    rows = len(next(iter(columns.values())))
    if rows == 0 or n_batches <= 0:
        return []
    world = distributed.world_size()  # every process gets an equal share (the loss gathers equal shapes)
    batch_size = max(world, batch_size - batch_size % world)
    sampler = NoDuplicatesBatchSampler(Dataset.from_dict(columns), batch_size=batch_size, drop_last=True,
                                       generator=torch.Generator(), seed=seed)
    batches: list[list[int]] = []
    for epoch in range(n_batches + 1):
        sampler.set_epoch(epoch)
        before = len(batches)
        for batch in sampler:
            batches.append(list(batch))
            if len(batches) == n_batches:
                return batches
        if len(batches) == before:
            break  # not one full batch in a pass: more passes will not help
    return batches


def pair_micro_batches(anchors: list[str], positives: list[str], batches: list[list[int]],
                       tokenize: Callable[[list[str]], dict]) -> Callable[[int], tuple]:
    """The engine's `micro_batch(m)`: batch m's pairs, this process's share, tokenised."""

    def micro_batch(m: int) -> tuple:
        idx = shard(batches[m])
        return tokenize([anchors[i] for i in idx]), tokenize([positives[i] for i in idx])

    return micro_batch
