"""Fine-tune the item text encoder on co-consumption: items one user consumed close in time
should embed close together.

Pairs (`co_consumption_pairs`): for each user's training positives (oldest first), item i is
paired with each of the next `window` items consumed within `max_gap_seconds` of it; by default
only pairs that at least `min_support` (2) users share are kept, once each: a single user's
session mixes unrelated films, and on MovieLens the unfiltered pairs left the loss at chance. Batches
(`unique_item_batches`) never hold the same item twice (as anchor or positive): a duplicate
would be its own in-batch negative. Loss: `loss.InBatchNegativesLoss`. The loop is small on
purpose (AdamW, linear warm-up then decay, gradient clipping, a hard step cap); the saved
directory is a standard transformers + sentence-transformers model (safetensors), loadable by
`load_backbone(dir)` and by `SentenceTransformer(dir)`.
Leaves out: evaluation (protocol) and the content scorer (content).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.backbones import write_sentence_transformers_files
from solutions.recsys.content import TextEncoder
from solutions.recsys.protocol import RankingSplit


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 200  # hard cap: CPU time grows linearly with it
    max_seconds: float = 600.0  # and a wall-clock cap: stop early on a slow or busy machine
    batch_size: int = 32
    lr: float = 1e-4  # 3e-5 left the loss at chance level after 40 steps on MovieLens
    warmup_fraction: float = 0.1
    window: int = 3
    max_gap_seconds: float = 7 * 24 * 3600.0
    min_support: int = 2  # keep only pairs that this many users share (denoises, deduplicates); 1 = all
    scale: float = 20.0
    max_length: int = 32  # item texts (title, genres, tags) are short
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def co_consumption_pairs(split: RankingSplit, window: int, max_gap_seconds: float,
                         min_support: int = 1) -> list[tuple[str, str]]:
    """(earlier item, later item) pairs from each user's training positives. With
    `min_support` > 1: each unordered pair that at least that many users share, once, sorted."""
    pairs, support = [], Counter()
    for user in sorted(split.train):
        history = split.history(user)
        mine = set()
        for i, (item, ts) in enumerate(history):
            for other, other_ts in history[i + 1:i + 1 + window]:
                if other != item and other_ts - ts <= max_gap_seconds:
                    pairs.append((item, other))
                    mine.add(tuple(sorted((item, other))))
        support.update(mine)
    if min_support <= 1:
        return pairs
    return sorted(p for p, n in support.items() if n >= min_support)


def unique_item_batches(pairs: list[tuple[str, str]], batch_size: int, n_batches: int,
                        rng: np.random.Generator) -> list[list[int]]:
    """Up to `n_batches` batches of pair indices with no item twice in a batch. Each pass over
    the pairs is a fresh shuffle; a pair that clashes with the batch being filled is carried
    over and goes first into the next batch. A pass that cannot fill one batch (too few
    distinct items) yields its partial batch (if at least 2 pairs) and the next pass reshuffles."""
    batches: list[list[int]] = []
    while len(batches) < n_batches:
        made, carry, batch, used = 0, [], [], set()
        for idx in rng.permutation(len(pairs)).tolist():
            a, b = pairs[idx]
            if a in used or b in used:
                carry.append(idx)
                continue
            batch.append(idx)
            used.update((a, b))
            if len(batch) < batch_size:
                continue
            batches.append(batch)
            made += 1
            if len(batches) == n_batches:
                return batches
            batch, used, still = [], set(), []
            for c in carry:
                a, b = pairs[c]
                if len(batch) < batch_size - 1 and a not in used and b not in used:
                    batch.append(c)
                    used.update((a, b))
                else:
                    still.append(c)
            carry = still
        if made == 0:
            if len(batch) < 2:
                break
            batches.append(batch)
    return batches


def finetune_encoder(encoder: TextEncoder, pairs: list[tuple[str, str]], texts: dict[str, str],
                     cfg: FinetuneConfig, rng: np.random.Generator, *, progress=None) -> dict:
    """Train `encoder` in place; returns {"losses": [...], "steps": n, "pairs": len(pairs), "samples": m,
    "stopped_by_time": bool}."""
    import time

    import torch

    from solutions.recsys.loss import InBatchNegativesLoss

    if not pairs:
        return {"losses": [], "steps": 0, "pairs": 0, "samples": 0, "stopped_by_time": False}
    loss_fn = InBatchNegativesLoss(encoder, scale=cfg.scale)
    model = encoder.backbone.encoder
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    batches = unique_item_batches(pairs, cfg.batch_size, cfg.steps, rng)
    warmup = max(1, int(cfg.warmup_fraction * len(batches)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, max(
        0.0, (len(batches) - s) / max(1, len(batches) - warmup))))
    losses, samples, start, stopped = [], 0, time.perf_counter(), False
    for step, batch in enumerate(batches):
        if time.perf_counter() - start > cfg.max_seconds:
            stopped = True
            break
        anchors = [texts.get(pairs[i][0]) or pairs[i][0] for i in batch]
        positives = [texts.get(pairs[i][1]) or pairs[i][1] for i in batch]
        loss = loss_fn(anchors, positives)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        samples += len(batch)
        if progress:
            progress(step, losses[-1])
    model.eval()
    return {"losses": losses, "steps": len(losses), "pairs": len(pairs), "samples": samples,
            "stopped_by_time": stopped}


def save_encoder(encoder: TextEncoder, directory: str | Path) -> Path:
    """A transformers + sentence-transformers directory (safetensors, mean pooling + Normalize)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder.backbone.encoder.save_pretrained(directory, safe_serialization=True)
    encoder.backbone.tokenizer.save_pretrained(directory)
    write_sentence_transformers_files(directory, pooling=encoder.backbone.pooling, normalize=True,
                                      max_length=encoder.max_length)
    return directory
