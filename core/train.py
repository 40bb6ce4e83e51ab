"""fit(): the training loop every classification recipe uses.

One lean loop instead of transformers' Trainer because the product needs things that Trainer makes
awkward on a custom head: a separate learning rate for the head, a head initialised from a probe,
LoRA adapters beside a plain head, and checkpoints that are safetensors only (Trainer pickles its
optimizer state). It has: seeded data order, gradient accumulation, linear warm-up/decay, gradient
clipping, class weights, dynamic padding (core.model.tokenize), validation-based early stopping,
best-checkpoint selection, checkpoint + resume after interruption, a metrics stream and a progress bar.
Methods a recipe switches on in `train:` are small objects called at named points of the loop:
adversarial training after the clean backward (core.adversarial: fgm/pgd), gradual unfreezing
before the optimizer step and an EMA of the weights after it (core.layerwise, core.ema), and
layer-wise learning-rate decay in the optimizer's parameter groups.
Leaves out: hyper-parameter search, model cards, hub upload.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.adversarial import build_adversary
from core.config import TrainConfig
from core.data import LabelMap, Split
from core.ema import EMA
from core.evaluate import classification_metrics
from core.layerwise import GradualUnfreezing


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


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch global RNGs (entry points only, never library code)."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def class_weight_tensor(label_ids: list[int], num_labels: int) -> torch.Tensor:
    """Balanced weights n / (k * count_c); labels absent from training get weight 0."""
    counts = np.bincount(np.asarray(label_ids), minlength=num_labels).astype(np.float64)
    weights = np.where(counts > 0, len(label_ids) / (num_labels * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: encoder weights (decayed), encoder biases/LayerNorms (not decayed), the head
    at head_lr; with layer_decay < 1 one pair of encoder groups per depth (core.layerwise)."""
    from core.layerwise import lr_scale

    num_layers = model.encoder.config.num_hidden_layers
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            key, lr, wd = ("head",), cfg.head_lr, 0.0
        else:
            scale = lr_scale(name, num_layers, cfg.layer_decay) if cfg.layer_decay != 1.0 else 1.0
            no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
            key, lr, wd = ("encoder", scale, no_decay), cfg.lr * scale, 0.0 if no_decay else cfg.weight_decay
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": wd})["params"].append(p)
    return list(groups.values())


class MetricsLog:
    """Append-only metrics.jsonl; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = []
        if keep_until_step is not None and self.path.is_file():
            self.rows = [r for r in map(json.loads, self.path.read_text().splitlines())
                         if r.get("step", 0) <= keep_until_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    @staticmethod
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------- checkpoints (safetensors only)

def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {f"{idx}.{key}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
               for idx, st in sd["state"].items() for key, v in st.items()}
    return tensors, sd["param_groups"]


def _restore_optimizer(optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(directory: Path, model, optimizer, scheduler, state: dict, best: dict | None,
                    ema=None) -> None:
    """Write to a temp dir, then swap it in: a crash mid-write leaves the previous checkpoint."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), tmp / "trainable.safetensors")
    opt_tensors, groups = _optimizer_tensors(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
    if best is not None:
        save_file(best, tmp / "best.safetensors")
    if ema is not None:
        save_file(ema.state(), tmp / "ema.safetensors")
    (tmp / "state.json").write_text(json.dumps(
        {**state, "param_groups": groups, "scheduler": scheduler.state_dict()}, default=float))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path, model, optimizer, scheduler, ema=None) -> tuple[dict, dict | None]:
    directory = Path(directory)
    if not (directory / "state.json").is_file() and directory.with_name(directory.name + ".old").is_dir():
        directory = directory.with_name(directory.name + ".old")  # crashed during the swap
    state = json.loads((directory / "state.json").read_text())
    _load_trainable(model, load_file(directory / "trainable.safetensors"))
    _restore_optimizer(optimizer, load_file(directory / "optimizer.safetensors"), state.pop("param_groups"))
    scheduler.load_state_dict(state.pop("scheduler"))
    torch.set_rng_state(load_file(directory / "rng.safetensors")["torch_rng"])
    best = load_file(directory / "best.safetensors") if (directory / "best.safetensors").is_file() else None
    if ema is not None and (directory / "ema.safetensors").is_file():
        ema.load_state(load_file(directory / "ema.safetensors"))
    return state, best


def has_checkpoint(run_dir: Path) -> bool:
    ckpt = Path(run_dir) / "checkpoint"
    return (ckpt / "state.json").is_file() or (ckpt.with_name("checkpoint.old") / "state.json").is_file()


# ---------------------------------------------------------------- the loop

def evaluate_split(model, split: Split, label_map: LabelMap, device: str) -> dict[str, float]:
    y_true = label_map.encode(split.labels)
    probs = model.predict_proba(split.texts, device=device)
    return classification_metrics(y_true, probs.argmax(axis=1))


def fit(model, train: Split, validation: Split, cfg: TrainConfig, *, device: str = "cpu",
        run_dir: Path, resume: bool = False, callbacks: tuple[Callable[[dict], None], ...] = (),
        progress: bool = True) -> FitResult:
    """Train `model` (a core.model.TextClassifier) in place and leave it at its best validation
    checkpoint. `callbacks` are called after every optimizer step with the loop state."""
    import time

    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    label_map = LabelMap(model.labels)
    y = torch.tensor(label_map.encode(train.labels))
    label_map.encode(validation.labels)  # fail now, not after an epoch, on an unseen label
    n = len(y)
    micro_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum)
    eval_every = cfg.eval_every or max(1, round(micro_per_epoch / cfg.grad_accum))

    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg))
    # the methods a recipe can switch on, each a small object called at a named point below
    adversary = build_adversary(cfg.adversarial, model.encoder, epsilon=cfg.adv_epsilon,
                                alpha=cfg.adv_alpha, steps=cfg.adv_steps)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    unfreezing = (GradualUnfreezing(model, model.encoder.config.num_hidden_layers, cfg.unfreeze_every)
                  if cfg.unfreeze_every else None)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total_steps), max(total_steps, 1))
    weights = class_weight_tensor(y.tolist(), len(model.labels)) if cfg.class_weights == "balanced" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None,
                                        label_smoothing=cfg.label_smoothing)

    state = {"step": 0, "best_metric": -math.inf, "best_step": 0, "bad_evals": 0,
             "samples_seen": 0, "tokens_seen": 0, "train_seconds": 0.0}
    best = None
    ckpt_dir = run_dir / "checkpoint"
    if resume and has_checkpoint(run_dir):
        state, best = load_checkpoint(ckpt_dir, model, optimizer, scheduler, ema)
    log = MetricsLog(run_dir / "metrics.jsonl", keep_until_step=state["step"] if resume else None)

    def batch_indices(micro: int) -> torch.Tensor:
        epoch, offset = divmod(micro, micro_per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        return perm[offset * cfg.batch_size:(offset + 1) * cfg.batch_size]

    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step", disable=not progress)
    running, running_n, stopped_early = 0.0, 0, False
    started = time.perf_counter() - state["train_seconds"]
    while state["step"] < total_steps and not stopped_early:
        micro0 = state["step"] * cfg.grad_accum
        for micro in range(micro0, micro0 + cfg.grad_accum):
            idx = batch_indices(micro)
            batch = {k: v.to(device) for k, v in model.tokenize([train.texts[i] for i in idx]).items()}
            target = y[idx].to(device)
            loss = loss_fn(model(**batch), target)
            (loss / cfg.grad_accum).backward()
            if adversary is not None:  # extra pass(es) on perturbed embeddings; gradients add up
                adversary.attack(lambda: loss_fn(model(**batch), target) / cfg.grad_accum)
            running += loss.item()
            running_n += 1
            state["samples_seen"] += len(idx)
            state["tokens_seen"] += int(batch["attention_mask"].sum())
        if unfreezing is not None:
            unfreezing.drop_frozen_grads(state["step"])
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        state["step"] += 1
        step = state["step"]
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            log.write({"step": step, "epoch": round(step * cfg.grad_accum / micro_per_epoch, 3),
                       "train_loss": running / running_n, "lr": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{running / running_n:.4f}")
            running, running_n = 0.0, 0
        if step % eval_every == 0 or step == total_steps:
            with ema.applied() if ema is not None else nullcontext():  # EMA: validate (and keep) the average
                scores = evaluate_split(model, validation, label_map, device)
                improved = scores[cfg.metric] > state["best_metric"]
                if improved:
                    best = _trainable_state(model)
            model.train()
            row = {"step": step, **{f"validation_{k}": v for k, v in scores.items()}}
            log.write(row)
            if improved:
                state.update(best_metric=scores[cfg.metric], best_step=step, bad_evals=0)
            else:
                state["bad_evals"] += 1
                stopped_early = bool(cfg.patience) and state["bad_evals"] >= cfg.patience
            state["train_seconds"] = time.perf_counter() - started
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, state, best, ema)
        for callback in callbacks:
            callback(dict(state))
    bar.close()
    if adversary is not None:
        adversary.remove()
    state["train_seconds"] = time.perf_counter() - started
    if best is not None:
        _load_trainable(model, best)
    model.eval()
    best_metric = state["best_metric"] if best is not None else None
    return FitResult(steps=state["step"], best_step=state["best_step"], best_metric=best_metric,
                     stopped_early=stopped_early, samples_seen=state["samples_seen"],
                     tokens_seen=state["tokens_seen"], train_seconds=state["train_seconds"],
                     history=[r for r in log.rows if "validation_accuracy" in r])
