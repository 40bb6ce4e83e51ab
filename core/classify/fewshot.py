"""Few-shot: k labelled examples per class, a SetFit-style contrastive phase on the sentence
encoder, then the usual head (probe-initialised, optionally fine-tuned end to end by core.classify.train).

The contrastive phase uses in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss,
the loss SetFit uses for pairs, through core.engine.contrastive): each batch holds (anchor, positive)
pairs of the same class, and every other pair's positive is a negative. A batch never holds two
pairs of one class (the class is a column NoDuplicatesBatchSampler keeps unique), so no in-batch
"negative" is secretly a positive (sentence-transformers #3189). Steps are capped, so 77+ classes
stay fast: the cost is `steps x batch_size` pairs, not the k^2 x classes^2 pairs SetFit enumerates.
"""

from __future__ import annotations

import numpy as np

from core.classify.config import ContrastiveConfig
from core.data.splits import Split
from core.engine.contrastive import PairStep, no_duplicate_batches, pair_micro_batches
from core.engine.loop import Engine, LoopSettings, decay_groups


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


def class_pairs(labels: list[str], n_pairs: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """`n_pairs` (anchor index, positive index) pairs, each two different examples of one class,
    the class drawn uniformly. Classes with a single example are skipped (no positive exists)."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    usable = sorted(label for label, idx in by_label.items() if len(idx) >= 2)
    if len(usable) < 2:
        raise ValueError("contrastive training needs at least 2 classes with 2+ examples each")
    anchors, positives = [], []
    for c in rng.integers(0, len(usable), size=n_pairs):
        a, p = rng.choice(by_label[usable[c]], size=2, replace=False).tolist()
        anchors.append(a)
        positives.append(p)
    return anchors, positives


def fit_contrastive(model, train: Split, settings: ContrastiveConfig, *, seed: int = 0, device: str = "cpu",
                    progress: bool = True) -> list[float]:
    """Phase one: tune the encoder (all trainable encoder weights; LoRA adapters if peft) so that
    same-class texts embed close together. Returns the loss per step. On the engine
    (core.engine.loop): AdamW at a constant `lr`, clipping 1.0; batches from sentence-transformers'
    NoDuplicatesBatchSampler over (anchor, positive, class) rows, so no class is in a batch twice."""
    steps, batch_size = settings.contrastive_steps, settings.contrastive_batch_size
    rng = np.random.default_rng(seed)
    anchors, positives = class_pairs(train.labels, steps * batch_size, rng)
    classes = len(set(train.labels))
    batches = no_duplicate_batches({"anchor": [train.texts[i] for i in anchors],
                                    "positive": [train.texts[i] for i in positives],
                                    "class": [train.labels[i] for i in anchors]},
                                   min(batch_size, classes), steps, seed)
    if not batches:
        return []
    step = PairStep(model, model.embed, scale=settings.contrastive_scale)
    encoder_params = [(n, p) for n, p in model.named_parameters() if not n.startswith("head.")]
    result = Engine(device, model.mixed_precision).run(
        step, decay_groups(encoder_params, settings.contrastive_lr, 0.01),
        pair_micro_batches([train.texts[i] for i in anchors], [train.texts[i] for i in positives], batches,
                           model.tokenize),
        LoopSettings(steps=len(batches), schedule="constant", max_grad_norm=1.0, desc="contrastive"),
        progress=progress)
    model.eval()
    return result.losses
