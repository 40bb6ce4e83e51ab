"""fit(): classification training, one step object on the shared engine (core.engine.loop).

`fit(model, train, validation, cfg)` trains a core.models.classifier.TextClassifier in place and leaves it at
its best validation checkpoint. What is classification-specific lives here: the cross-entropy
step (class weights, label smoothing), the AdamW parameter groups (a separate head learning rate,
layer-wise LR decay), tokenising the training texts once and batching them by length, and the
methods a recipe switches on in `train:` as engine hooks (adversarial FGM/PGD after the clean
backward, gradual unfreezing before the optimizer step, an EMA of the weights after it). The
engine run a head plugs its step into is `train_steps` (core.classify.multilabel runs it with a
BCE step on multi-hot targets). The loop itself (optimizer, schedule, clipping, accumulation, validation, early stopping, safetensors
checkpoints and resume, several processes) is core.engine.loop's.

Length-grouped batches (`group_by_length`, on by default, as transformers' LengthGroupedSampler):
each epoch is a seeded permutation cut into "megabatches" of up to 50 batches, each sorted by
token length, so a batch pads its texts to similar lengths (benchmarks/engine_speed.py measures
what it saves on BANKING77). Batches are still random at the megabatch level.
Leaves out: hyper-parameter search, model cards, hub upload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.classify.config import TrainConfig
from core.data.splits import LabelMap, Split
from core.engine.adversarial import build_adversary
from core.engine.checkpoint import has_checkpoint as _has_ckpt
from core.engine.checkpoint import load_trainable, trainable_state
from core.engine.ema import EMA
from core.engine.layerwise import GradualUnfreezing, lr_scale
from core.engine.loop import Engine, LoopSettings, NoOp, Validation, is_decayed, shard
from core.evaluation.metrics import classification_metrics
from core.models.encoder import right_pad

MEGABATCH = 50  # batches per length-sorted group (transformers' LengthGroupedSampler uses 50 too)


@dataclass
class FitResult:
    steps: int
    best_step: int
    best_metric: float | None  # None when no validation pass ran (no training steps)
    stopped_early: bool
    samples_seen: int
    tokens_seen: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)



def class_weight_tensor(label_ids: list[int], num_labels: int) -> torch.Tensor:
    """Balanced weights n / (k * count_c); labels absent from training get weight 0."""
    counts = np.bincount(np.asarray(label_ids), minlength=num_labels).astype(np.float64)
    weights = np.where(counts > 0, len(label_ids) / (num_labels * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: encoder weights (decayed), encoder biases/LayerNorms (not decayed), the head
    at head_lr; with layer_decay < 1 one pair of encoder groups per depth (core.engine.layerwise)."""
    num_layers = model.encoder.config.num_hidden_layers
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            key, lr, wd = ("head",), cfg.head_lr, 0.0
        else:
            scale = lr_scale(name, num_layers, cfg.layer_decay) if cfg.layer_decay != 1.0 else 1.0
            decayed = is_decayed(name, p)
            key, lr, wd = ("encoder", scale, not decayed), cfg.lr * scale, cfg.weight_decay if decayed else 0.0
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": wd})["params"].append(p)
    return list(groups.values())


def has_checkpoint(run_dir: Path) -> bool:
    return _has_ckpt(Path(run_dir) / "checkpoint")


def evaluate_split(model, split: Split, label_map: LabelMap, device) -> dict[str, float]:
    y_true = label_map.encode(split.labels)
    probs = model.predict_proba(split.texts, device=device)
    return classification_metrics(y_true, probs.argmax(axis=1))


class ClassificationStep(nn.Module):
    """batch (input_ids, attention_mask, labels) -> cross-entropy of the classifier's logits."""

    def __init__(self, model, class_weights: torch.Tensor | None, label_smoothing: float):
        super().__init__()
        self.model = model
        self.loss = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)

    def forward(self, batch: dict) -> torch.Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return self.loss(logits, batch["labels"])


def epoch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> np.ndarray:
    """The order of one epoch: a seeded permutation; with `group_by_length`, cut into megabatches
    of up to MEGABATCH batches, each sorted by length (longest first), so batches pad little.
    A megabatch is at most half the epoch, so a small training set still gets batches of new
    composition every epoch (sorting a whole epoch by length would give the same batches each
    time, single-class ones where classes differ in length); under 4 batches: no grouping."""
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).numpy()
    per_group = min(MEGABATCH, math.ceil(len(lengths) / batch_size) // 2)
    if not group_by_length or per_group < 2:
        return perm
    size = batch_size * per_group
    return np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                           for chunk in (perm[i:i + size] for i in range(0, len(perm), size))])


def pad_batch(token_ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch: input_ids and attention_mask [B, T]."""
    ids, mask = right_pad(token_ids, pad_id)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


class _Adversary(NoOp):
    def __init__(self, adversary):
        self.adversary = adversary

    def after_backward(self, step_loss, local_loss, backward) -> None:
        self.adversary.backward = backward  # the engine's: loss scaling under fp16
        self.adversary.attack(step_loss, local_loss)

    def close(self) -> None:
        self.adversary.remove()


class _Unfreezing(NoOp):
    def __init__(self, unfreezing: GradualUnfreezing):
        self.unfreezing = unfreezing

    def before_optimizer_step(self, step: int) -> None:
        self.unfreezing.drop_frozen_grads(step)


class _EMA(NoOp):
    name = "ema"

    def __init__(self, ema: EMA):
        self.ema = ema

    def after_optimizer_step(self, step: int) -> None:
        self.ema.update()

    def evaluation_weights(self):
        return self.ema.applied()  # validate (and keep) the average

    def state(self) -> dict[str, torch.Tensor]:
        return self.ema.state()

    def load_state(self, tensors) -> None:
        self.ema.load_state(tensors)


def method_hooks(model, cfg: TrainConfig) -> tuple:
    """The methods `cfg` switches on, as engine hooks (each off by default)."""
    hooks = []
    adversary = build_adversary(cfg.adversarial, model.encoder, epsilon=cfg.adv_epsilon,
                                alpha=cfg.adv_alpha, steps=cfg.adv_steps)
    if adversary is not None:
        hooks.append(_Adversary(adversary))
    if cfg.unfreeze_every:
        hooks.append(_Unfreezing(GradualUnfreezing(model, model.encoder.config.num_hidden_layers, cfg.unfreeze_every)))
    if cfg.ema_decay:
        hooks.append(_EMA(EMA(model, cfg.ema_decay)))
    return tuple(hooks)


def fit(model, train: Split, validation: Split, cfg: TrainConfig, *, device: str = "cpu",
        run_dir: Path, resume: bool = False, callbacks: tuple[Callable[[dict], None], ...] = (),
        progress: bool = True, metric_sinks: tuple[Callable[[dict], None], ...] = ()) -> FitResult:
    """Train `model` (a core.models.classifier.TextClassifier) in place and leave it at its best validation
    checkpoint. `callbacks` are called after every optimizer step with the loop state;
    `metric_sinks` with each row of metrics.jsonl as it is written (core.runs.tracking).
    `cfg.batch_size` is the global batch (split across processes when launched as several)."""
    label_map = LabelMap(model.labels)
    y = np.asarray(label_map.encode(train.labels))
    label_map.encode(validation.labels)  # fail now, not after an epoch, on an unseen label
    weights = class_weight_tensor(y.tolist(), len(model.labels)) if cfg.class_weights == "balanced" else None
    step = ClassificationStep(model, weights, cfg.label_smoothing)
    return train_steps(model, train.texts, y, step, lambda dev: evaluate_split(model, validation, label_map, dev),
                       cfg, device=device, run_dir=run_dir, resume=resume, callbacks=callbacks, progress=progress,
                       metric_sinks=metric_sinks)


def train_steps(model, texts: list[str], targets: np.ndarray, step: nn.Module, evaluate: Callable[[str], dict],
                cfg: TrainConfig, *, device: str, run_dir: Path, resume: bool = False,
                callbacks: tuple[Callable[[dict], None], ...] = (), progress: bool = True,
                metric_sinks: tuple[Callable[[dict], None], ...] = ()) -> FitResult:
    """The engine run every classification head shares: `step(batch)` -> loss on batches of the
    tokenised `texts` with `batch["labels"]` = rows of `targets` (class ids, or multi-hot rows for
    core.classify.multilabel), validated by `evaluate(device)` -> metrics holding `cfg.metric`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(targets)
    token_ids = model.tokenizer(list(texts), truncation=True, max_length=model.max_length)["input_ids"]
    lengths = np.asarray([len(ids) for ids in token_ids])
    pad_id = model.tokenizer.pad_token_id or 0
    micro_per_epoch = math.ceil(len(y) / cfg.batch_size)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum)
    eval_every = cfg.eval_every or max(1, round(micro_per_epoch / cfg.grad_accum))
    group = cfg.group_by_length
    orders: dict[int, np.ndarray] = {}

    def micro_batch(micro: int) -> dict:
        epoch, offset = divmod(micro, micro_per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(lengths, cfg.batch_size, cfg.seed, epoch, group)
        idx = shard(orders[epoch][offset * cfg.batch_size:(offset + 1) * cfg.batch_size])
        return {**pad_batch([token_ids[i] for i in idx], pad_id), "labels": torch.from_numpy(y[idx])}

    engine = Engine(device, cfg.mixed_precision)
    model.mixed_precision = cfg.mixed_precision  # validation, and every prediction after, compute as training did
    hooks = method_hooks(model, cfg)
    settings = LoopSettings(steps=total_steps, warmup=cfg.warmup, schedule="linear", max_grad_norm=cfg.max_grad_norm,
                            grad_accum=cfg.grad_accum, log_every=cfg.log_every, desc="train",
                            steps_per_epoch=micro_per_epoch / cfg.grad_accum, stop_after=cfg.stop_after)
    check = Validation(lambda: evaluate(engine.device), every=eval_every, metric=cfg.metric, patience=cfg.patience)
    try:
        result = engine.run(step, _param_groups(model, cfg), micro_batch, settings, validation=check, hooks=hooks,
                            keep=lambda: trainable_state(model), restore=lambda s: load_trainable(model, s),
                            checkpoint_dir=run_dir / "checkpoint", resume=resume,
                            metrics_path=run_dir / "metrics.jsonl", callbacks=callbacks, progress=progress,
                            metric_sinks=metric_sinks)
    finally:
        for hook in hooks:
            hook.close()
    model.eval()
    return FitResult(steps=result.steps, best_step=result.best_step, best_metric=result.best_metric,
                     stopped_early=result.stopped_early, samples_seen=result.samples_seen,
                     tokens_seen=result.tokens_seen, train_seconds=result.train_seconds,
                     history=result.history)
