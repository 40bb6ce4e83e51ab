"""In-batch-negatives contrastive loss (MultipleNegativesRankingLoss, Henderson et al. 2017).

For a batch of (anchor, positive) item texts, each anchor's positive is the right answer and
every other positive in the batch is a negative: cross-entropy over scale * cosine similarities.
`symmetric=True` adds the same loss with the roles swapped (positives -> anchors). Equivalent to
sentence-transformers' MultipleNegativesRankingLoss (scale 20) without needing a
SentenceTransformer object. Duplicates in a batch act as false negatives
(sentence-transformers #3189): the sampler in `finetune` keeps every item unique per batch.
"""

from __future__ import annotations

import torch
from torch import nn


class InBatchNegativesLoss(nn.Module):
    def __init__(self, encoder, scale: float = 20.0, symmetric: bool = True):
        super().__init__()
        self.encoder, self.scale, self.symmetric = encoder, scale, symmetric

    def forward(self, anchors: list[str], positives: list[str]) -> torch.Tensor:
        emb = self.encoder.embed(self.encoder.tokenize(list(anchors) + list(positives)))
        return self.loss_from_embeddings(emb[:len(anchors)], emb[len(anchors):])

    def loss_from_embeddings(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """`anchors`, `positives`: [B, D] L2-normalised; row i of each is a true pair."""
        logits = self.scale * anchors @ positives.T
        target = torch.arange(len(anchors), device=anchors.device)
        loss = nn.functional.cross_entropy(logits, target)
        if self.symmetric:
            loss = (loss + nn.functional.cross_entropy(logits.T, target)) / 2
        return loss
