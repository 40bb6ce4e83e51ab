"""Few-shot: k labelled examples per class, a SetFit-style contrastive phase on the sentence
encoder, then the usual head (probe-initialised, optionally fine-tuned end to end by core.train).

The contrastive phase uses in-batch negatives (MultipleNegativesRankingLoss, the loss SetFit and
sentence-transformers use for pairs): each batch holds (anchor, positive) pairs of the same class,
and every other pair's positive is a negative. A batch never holds two pairs of one class, so no
in-batch "negative" is secretly a positive (sentence-transformers #3189). Steps are capped, so 77+
classes stay fast: the cost is `steps x batch_size` pairs, not the k^2 x classes^2 pairs SetFit
enumerates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.data import Split


def sample_per_class(split: Split, k: int, rng: np.random.Generator) -> Split:
    """k examples of each label (all of a label's examples if it has fewer), in a shuffled order."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_label.setdefault(label, []).append(i)
    chosen = [i for label in sorted(by_label) for i in rng.permutation(by_label[label])[:k].tolist()]
    chosen = rng.permutation(chosen).tolist()
    return Split([split.texts[i] for i in chosen], [split.labels[i] for i in chosen])


def with_label_name_examples(split: Split, labels: list[str]) -> Split:
    """`split` plus one example per label: the label's name with `_`/`-` read as spaces
    ("card_arrival" -> "card arrival"). Descriptive label names are a free, labelled example
    each; on BANKING77 at 10 shots they added 0.5-0.6 points of test accuracy to a frozen probe
    (MiniLM and mpnet, 3 seeds). Codes like "INT_042" carry no meaning: leave it off for them."""
    names = [" ".join(label.replace("_", " ").replace("-", " ").split()) for label in labels]
    return Split(list(split.texts) + names, list(split.labels) + list(labels))


def pair_batches(labels: list[str], batch_size: int, steps: int, rng: np.random.Generator):
    """Yield `steps` batches of (anchor index, positive index) pairs, each pair from one class,
    no class twice in a batch. Classes with a single example are skipped (no positive exists)."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    usable = sorted(label for label, idx in by_label.items() if len(idx) >= 2)
    if len(usable) < 2:
        raise ValueError("contrastive training needs at least 2 classes with 2+ examples each")
    per_batch = min(batch_size, len(usable))
    for _ in range(steps):
        classes = rng.choice(len(usable), size=per_batch, replace=False)
        yield [tuple(rng.choice(by_label[usable[c]], size=2, replace=False).tolist()) for c in classes]


class MultipleNegativesRankingLoss(nn.Module):
    """Cross-entropy of each anchor against all positives in the batch (its own is the target),
    on cosine similarities times `scale` (20, as in sentence-transformers).

    Inputs to `loss_from_embeddings`: anchors [B, D] and positives [B, D], row i of each a pair.
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def loss_from_embeddings(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        a = nn.functional.normalize(anchors, dim=-1)
        p = nn.functional.normalize(positives, dim=-1)
        scores = a @ p.T * self.scale
        return nn.functional.cross_entropy(scores, torch.arange(len(a), device=a.device))

    def forward(self, model, anchor_texts: list[str], positive_texts: list[str], device: str = "cpu"):
        a = {k: v.to(device) for k, v in model.tokenize(anchor_texts).items()}
        p = {k: v.to(device) for k, v in model.tokenize(positive_texts).items()}
        return self.loss_from_embeddings(model.embed(**a), model.embed(**p))


@dataclass(frozen=True)
class ContrastiveSettings:
    steps: int = 100
    batch_size: int = 32
    lr: float = 2e-5
    scale: float = 20.0
    seed: int = 0


def fit_contrastive(model, train: Split, settings: ContrastiveSettings, *, device: str = "cpu",
                    progress: bool = True) -> list[float]:
    """Phase one: tune the encoder (all trainable encoder weights; LoRA adapters if peft) so that
    same-class texts embed close together. Returns the loss per step."""
    from tqdm.auto import tqdm

    loss_fn = MultipleNegativesRankingLoss(settings.scale)
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    optimizer = torch.optim.AdamW(params, lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    model.to(device).train()
    losses = []
    for batch in tqdm(pair_batches(train.labels, settings.batch_size, settings.steps, rng),
                      total=settings.steps, desc="contrastive", disable=not progress):
        loss = loss_fn(model, [train.texts[a] for a, _ in batch], [train.texts[p] for _, p in batch], device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
    model.eval()
    return losses
