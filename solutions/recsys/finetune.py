"""Fine-tune the item text encoder on co-consumption: items one user consumed close in time
should embed close together.

Pairs (`co_consumption_pairs`): for each user's training positives (oldest first), item i is
paired with each of the next `window` items consumed within `max_gap_seconds` of it; by default
only pairs that at least `min_support` users share are kept, once each: a single user's session
mixes unrelated films, and on MovieLens the unfiltered pairs left the loss at chance.
Training is core's: the shared engine and core.engine.contrastive (batches that never hold the same item
twice, as anchor or positive, since a duplicate would be its own in-batch negative; symmetric
MultipleNegativesRankingLoss), with a hard step cap and a wall-clock cap. The saved directory is a
standard transformers + sentence-transformers model (safetensors), loadable by
`load_backbone(dir)` and by `SentenceTransformer(dir)`. The recipe around it: solutions.recsys.recipe.
Leaves out: evaluation (protocol) and the content scorer (content).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from core.engine.contrastive import PairStep, no_duplicate_batches, pair_micro_batches
from core.engine.loop import Engine, LoopSettings, decay_groups
from core.models.backbones import write_sentence_transformers_files
from solutions.recsys.content import TextEncoder
from solutions.recsys.protocol import RankingSplit
from solutions.recsys.recipe_config import ItemEncoderModel, ItemEncoderTrain

RECIPE_TRAIN, RECIPE_MODEL = ItemEncoderTrain(), ItemEncoderModel()  # where every default (and its reason) is set


@dataclass(frozen=True)
class FinetuneConfig:
    """The item-encoder recipe's training settings (solutions.recsys.recipe_config) in the units the
    fine-tuning takes: the gap in seconds, and the model section's max_length beside them."""

    steps: int = RECIPE_TRAIN.steps
    max_seconds: float = RECIPE_TRAIN.max_seconds
    batch_size: int = RECIPE_TRAIN.batch_size
    lr: float = RECIPE_TRAIN.lr
    warmup_fraction: float = RECIPE_TRAIN.warmup
    window: int = RECIPE_TRAIN.window
    max_gap_seconds: float = RECIPE_TRAIN.max_gap_days * 86400.0
    min_support: int = RECIPE_TRAIN.min_support
    scale: float = RECIPE_TRAIN.scale
    max_length: int = RECIPE_MODEL.max_length
    seed: int = RECIPE_TRAIN.seed

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


def finetune_encoder(encoder: TextEncoder, pairs: list[tuple[str, str]], texts: dict[str, str],
                     cfg: FinetuneConfig, rng=None, *, device: str = "cpu", progress: bool = False,
                     metric_sinks: tuple = ()) -> dict:
    """Train `encoder` in place on the shared engine (core.engine.loop): AdamW + linear warm-up/decay,
    clipping 1.0, symmetric in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss
    through core.engine.contrastive), batches in which no item appears twice (its NoDuplicatesBatchSampler
    over the pair's item ids), seeded by `cfg.seed` (`rng` is accepted for older callers, unused).
    `metric_sinks` get the engine's metrics rows as they come (core.runs.tracking).
    Returns {"losses": [...], "steps": n, "pairs": len(pairs), "samples": m, "stopped_by_time": bool}."""
    empty = {"losses": [], "steps": 0, "pairs": len(pairs), "samples": 0, "stopped_by_time": False}
    if not pairs:
        return empty
    batches = no_duplicate_batches({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]},
                                   cfg.batch_size, cfg.steps, cfg.seed)
    if not batches:
        return empty
    model = encoder.backbone.encoder

    def embed(input_ids, attention_mask):
        return encoder.embed({"input_ids": input_ids, "attention_mask": attention_mask})

    result = Engine(device).run(
        PairStep(model, embed, scale=cfg.scale, symmetric=True), decay_groups(model.named_parameters(), cfg.lr, 0.01),
        pair_micro_batches([texts.get(a) or a for a, _ in pairs], [texts.get(b) or b for _, b in pairs], batches,
                           encoder.tokenize),
        LoopSettings(steps=len(batches), warmup=cfg.warmup_fraction, max_seconds=cfg.max_seconds, desc="item encoder"),
        progress=progress, metric_sinks=metric_sinks)
    return {"losses": result.losses, "steps": result.steps, "pairs": len(pairs), "samples": result.samples_seen,
            "stopped_by_time": result.stopped_by_time}


def save_encoder(encoder: TextEncoder, directory: str | Path) -> Path:
    """A transformers + sentence-transformers directory (safetensors, mean pooling + Normalize)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder.backbone.encoder.save_pretrained(directory, safe_serialization=True)
    encoder.backbone.tokenizer.save_pretrained(directory)
    write_sentence_transformers_files(directory, pooling=encoder.backbone.pooling, normalize=True,
                                      max_length=encoder.max_length)
    return directory
