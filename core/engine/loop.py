"""The training engine: the one optimisation loop every trainer in the package runs.

Classification (core.classify.train), the contrastive few-shot phase (core.classify.fewshot), MLM and SimCSE domain
adaptation (core.adapt.mlm, core.adapt.simcse) and the recsys item encoder all call `Engine.run`. What
differs between them is a *step*: an `nn.Module` whose `forward(batch)` returns the loss, plus a
function that gives the micro-batch for a global micro-step index. Everything else is here, once:
the AdamW optimizer, the learning-rate schedule, gradient clipping, gradient accumulation,
logging, the progress bar, validation with best-weights keeping and early stopping, and
safetensors checkpoints with resume.

Distribution is accelerate's. The same code runs on 1 CPU, N CPU processes (gloo), 1 GPU, N GPUs
and several machines: a launcher (`verticals train ... --nproc N`, `torchrun`, `accelerate
launch`) starts the processes, `Accelerator.prepare` wraps the step in DistributedDataParallel
(so gradients are averaged across processes in `backward`) and runs it under the precision
`mixed_precision` resolves to (core.foundation.precision: `auto` is bf16 or fp16 with loss scaling
on a GPU, bf16 autocast on a CPU with native bf16, float32 otherwise). The step module, not the model,
is what gets wrapped: trainers whose loss calls `model.embed` rather than `model.forward` are
still synchronised, because DDP hooks the step's forward.

Batches. `batch_size` is the *global* batch: at micro-step m every process builds the same
index list and keeps its own slice (`shard`), so N processes see exactly the samples one process
would, and a run at the same global batch gives the same weights up to float summation order
(tests/distributed). Losses that use the other samples of the batch as negatives gather the
embeddings of every process first (sentence-transformers' `gather_across_devices`).

Methods are small objects called at named points (`Hook`): `after_backward` (adversarial
training adds its extra passes), `before_optimizer_step` (gradual unfreezing drops the
gradients of frozen blocks), `after_optimizer_step` (EMA), `evaluation_weights` (validate with
the EMA weights swapped in) and `state`/`load_state` (their tensors go into the checkpoint).

Why not transformers' Trainer: it pickles optimizer state into checkpoints, owns the data
pipeline (HF datasets + collators) and the evaluation loop, and needs subclassing for a
separate head learning rate or a two-view loss; measured side by side on BANKING77 this loop
with length-grouped batches is faster (benchmarks/engine_speed.py). Leaves out: hyper-parameter
search, model cards, hub upload, FSDP/DeepSpeed configuration (accelerate's config file can
switch them on; nothing here is tested with them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from core.engine.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    load_trainable,
    save_checkpoint,
    save_final_checkpoint,
    trainable_state,
)
from core.engine.metrics_log import MetricsLog
from core.engine.schedule import optimizer_and_schedule
from core.foundation import distributed
from core.foundation.errors import UserError
from core.foundation.precision import accelerate_name, resolve_precision


@dataclass(frozen=True)
class LoopSettings:
    """How one run of the loop optimises (each trainer fills it from its own config)."""

    steps: int  # optimizer steps
    warmup: float = 0.0  # fraction of steps with linear warm-up
    schedule: str = "linear"  # linear (warm-up, then linear decay to 0) | constant (warm-up, then flat)
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    log_every: int = 10
    max_seconds: float = 0.0  # stop early after this much training time; 0 = no limit
    desc: str = "train"  # progress bar label
    steps_per_epoch: float = 0.0  # for the `epoch` column of the metrics log; 0 = no such column
    stop_after: int = 0  # stop after this many optimizer steps, the schedule still spanning `steps`; 0 = all of them


@dataclass(frozen=True)
class Validation:
    """Validate every `every` steps: `evaluate()` -> metrics; keep the weights with the best
    `metric`; stop after `patience` passes without improvement (0 = never stop early)."""

    evaluate: Callable[[], dict[str, float]]
    every: int
    metric: str = "accuracy"
    patience: int = 0


class Hook(Protocol):
    """A method the loop calls at named points; implement only the points you need (see `NoOp`)."""

    def after_backward(self, step_loss: Callable[[], torch.Tensor], local_loss: Callable[[], torch.Tensor],
                       backward: Callable[[torch.Tensor], None]) -> None:
        """`step_loss()`: the loss again, through the distributed wrapper (its backward adds
        synchronised gradients); `local_loss()`: this process only, for gradients w.r.t. inputs;
        `backward(loss)`: the engine's backward (mixed-precision loss scaling included)."""
    def before_optimizer_step(self, step: int) -> None: ...
    def after_optimizer_step(self, step: int) -> None: ...
    def evaluation_weights(self): ...  # a context manager
    def state(self) -> dict[str, torch.Tensor]: ...
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None: ...


class NoOp:
    """Base for hooks: every point does nothing."""

    name = "hook"

    def after_backward(self, step_loss, local_loss, backward) -> None:
        pass

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        pass

    def evaluation_weights(self):
        return nullcontext()

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class LoopResult:
    steps: int
    best_step: int
    best_metric: float | None  # None when no validation ran
    stopped_early: bool
    stopped_by_time: bool
    samples_seen: int  # global samples (all processes)
    tokens_seen: int  # global non-padding tokens
    train_seconds: float
    losses: list[float] = field(default_factory=list)  # one mean loss per optimizer step
    history: list[dict] = field(default_factory=list)  # validation rows


def shard(indices, rank: int | None = None, world: int | None = None):
    """This process's slice of a global batch's indices (every process builds the same list)."""
    rank = distributed.rank() if rank is None else rank
    world = distributed.world_size() if world is None else world
    return indices[rank::world]


def batch_count(batch: Any) -> tuple[int, int]:
    """(samples, non-padding tokens) of a micro-batch: mappings of tensors with `attention_mask`
    (dicts, a tokenizer's BatchEncoding), or a list/tuple of such (pairs); the first tensor's length otherwise."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if mask is not None:
            return int(mask.shape[0]), int(mask.sum())
        first = next(v for v in batch.values() if torch.is_tensor(v))
        return int(first.shape[0]), 0
    if isinstance(batch, (list, tuple)):
        samples, tokens = batch_count(batch[0])
        return samples, tokens + sum(batch_count(b)[1] for b in batch[1:])
    return len(batch), 0


def to_device(batch: Any, device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):  # dicts and a tokenizer's BatchEncoding (a UserDict, not a dict)
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def accelerator_for(device: str, mixed_precision: str = "auto"):
    """An `accelerate.Accelerator` for `device` (cpu | cuda) at the precision `mixed_precision`
    resolves to there: on CPU it joins a torchrun/accelerate launch as a gloo process group; on a
    GPU each process takes its LOCAL_RANK's device."""
    from accelerate import Accelerator, DistributedDataParallelKwargs  # lazy: accelerate pulls in torch
    from accelerate.state import AcceleratorState  # lazy: as above

    cpu = not str(device).startswith("cuda")
    precision = accelerate_name(resolve_precision(mixed_precision, device))
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        # accelerate keeps one precision per process and refuses another ("AcceleratorState has
        # already been initialized"); a later run in the process (a test, a benchmark, a retrain in
        # a server) may ask for another. Dropping that state keeps the process group (PartialState).
        AcceleratorState._reset_state()
    # find_unused_parameters: a step may leave weights out of its loss (BERT's pooler, a frozen
    # block), and DDP would otherwise wait for their gradients forever.
    return Accelerator(cpu=cpu, mixed_precision=precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


class Engine:
    """`Engine(device, mixed_precision).run(step, param_groups, micro_batch, settings, ...)`: see the
    module docstring; `precision` is what the run computes in ("fp32" | "bf16" | "fp16")."""

    def __init__(self, device: str = "cpu", mixed_precision: str = "auto"):
        self.accelerator = accelerator_for(device, mixed_precision)
        self.device = self.accelerator.device
        self.precision = resolve_precision(mixed_precision, str(self.device))

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def run(self, step: nn.Module, param_groups: list[dict], micro_batch: Callable[[int], Any],
            settings: LoopSettings, *, validation: Validation | None = None, hooks: tuple = (),
            keep: Callable[[], dict[str, torch.Tensor]] | None = None,
            restore: Callable[[dict[str, torch.Tensor]], None] | None = None,
            checkpoint_dir: Path | None = None, resume: bool = False, metrics_path: Path | None = None,
            callbacks: tuple[Callable[[dict], None], ...] = (), progress: bool = True,
            metric_sinks: tuple[Callable[[dict], None], ...] = ()) -> LoopResult:
        """Optimise `step` (forward(batch) -> scalar loss) over `settings.steps` optimizer steps.

        `micro_batch(m)`: this process's share of global micro-batch m (deterministic in m, so a
        resumed run continues with the batch it would have seen). `keep`/`restore`: read and write
        the weights that validation picks (default: every trainable parameter of `step`).
        Checkpoints (safetensors) go to `checkpoint_dir` after each validation pass; the last one keeps
        only the final weights (core.engine.checkpoint.save_final_checkpoint; resuming it takes no step). `metric_sinks`
        get, on the main process, each metrics row as it is written (the rows of metrics.jsonl,
        with or without `metrics_path`): an experiment tracker's live feed (core.runs.tracking)."""
        from tqdm.auto import tqdm  # lazy: only when a loop runs

        acc, module = self.accelerator, step
        keep = keep or (lambda: trainable_state(module))
        restore = restore or (lambda state: load_trainable(module, state))
        optimizer, scheduler = optimizer_and_schedule(param_groups, settings)
        # The scheduler is stepped by hand, once per optimizer step: `batch_size` is the global batch.
        wrapped, optimizer = acc.prepare(module, optimizer)
        trainable = [p for g in param_groups for p in g["params"]]
        state = {"step": 0, "best_metric": -math.inf, "best_step": 0, "bad_evals": 0,
                 "samples_seen": 0, "tokens_seen": 0, "train_seconds": 0.0}
        best, stopped_early = None, False
        if resume and checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
            state, best = load_checkpoint(checkpoint_dir, restore, optimizer, scheduler, hooks)
            stopped_early = resumed_early_stop(state, settings.steps)
        log = MetricsLog(metrics_path, keep_until_step=state["step"] if resume else None) if metrics_path else None
        sinks = (((log.write,) if log is not None else ()) + tuple(metric_sinks)) if acc.is_main_process else ()

        wrapped.train()
        bar = tqdm(total=settings.steps, initial=state["step"], desc=settings.desc, unit="step",
                   disable=not progress or not acc.is_main_process)
        losses, running = [], []
        stopped_by_time = False
        started = time.perf_counter() - state["train_seconds"]
        last = min(settings.stop_after or settings.steps, settings.steps)  # a run's first steps: core.plan's trial
        while state["step"] < last and not stopped_early:
            if settings.max_seconds and time.perf_counter() - started > settings.max_seconds:
                stopped_by_time = True
                break
            step_loss = self._accumulate(wrapped, module, micro_batch, settings, hooks, state)
            self._optimizer_step(optimizer, scheduler, trainable, settings, hooks, state)
            n = state["step"]
            losses.append(step_loss)
            running.append(step_loss)
            bar.update(1)
            if n % settings.log_every == 0 or n == settings.steps:
                epoch = {"epoch": round(n / settings.steps_per_epoch, 3)} if settings.steps_per_epoch else {}
                for sink in sinks:
                    sink({"step": n, **epoch, "train_loss": sum(running) / len(running),
                          "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{sum(running) / len(running):.4f}")
                running = []
            if validation is not None and (n % validation.every == 0 or n == settings.steps):
                picked, stopped_early = self._validate(wrapped, validation, hooks, keep, state, sinks)
                best = picked if picked is not None else best
                state["train_seconds"] = time.perf_counter() - started
                if checkpoint_dir is not None:
                    _checkpoint(checkpoint_dir, keep, optimizer, scheduler, state, best, hooks, stopped_early,
                                over=stopped_early or n == settings.steps)
            for callback in callbacks:
                callback(dict(state))
        bar.close()
        state["train_seconds"] = time.perf_counter() - started
        if best is not None:
            restore(best)
        wrapped.eval()
        del wrapped, optimizer
        acc.free_memory()  # drop accelerate's references: a later run wraps the model afresh
        history = [r for r in (log.rows if log else []) if any(k.startswith("validation_") for k in r)]
        return LoopResult(steps=state["step"], best_step=state["best_step"],
                          best_metric=None if state["best_metric"] == -math.inf else state["best_metric"],
                          stopped_early=stopped_early, stopped_by_time=stopped_by_time,
                          samples_seen=state["samples_seen"], tokens_seen=state["tokens_seen"],
                          train_seconds=state["train_seconds"], losses=losses, history=history)

    def _accumulate(self, wrapped, module, micro_batch, settings: LoopSettings, hooks: tuple, state: dict) -> float:
        """Forward and backward over the micro-batches of one optimizer step (gradients synchronised
        on the last one only); counts the global samples and tokens into `state`; returns the step's
        loss as every process saw it."""
        acc, world = self.accelerator, self.accelerator.num_processes
        micro0 = state["step"] * settings.grad_accum
        step_loss = 0.0
        for micro in range(micro0, micro0 + settings.grad_accum):
            batch = to_device(micro_batch(micro), acc.device)
            last = micro == micro0 + settings.grad_accum - 1
            with acc.no_sync(wrapped) if not last else nullcontext():
                loss = wrapped(batch)
                acc.backward(loss / settings.grad_accum)
                for hook in hooks:  # e.g. adversarial passes; their gradients add up
                    hook.after_backward(lambda: wrapped(batch) / settings.grad_accum,
                                        lambda: module(batch) / settings.grad_accum, acc.backward)
            step_loss += float(loss.detach()) / settings.grad_accum
            samples, tokens = batch_count(batch)
            counts = torch.tensor([samples, tokens], dtype=torch.long, device=acc.device)
            samples, tokens = (acc.reduce(counts, "sum") if world > 1 else counts).tolist()
            state["samples_seen"] += samples
            state["tokens_seen"] += tokens
        if world > 1:  # the loss every process saw, for the log
            step_loss = float(acc.reduce(torch.tensor(step_loss, device=acc.device), "mean"))
        return step_loss

    def _optimizer_step(self, optimizer, scheduler, trainable: list, settings: LoopSettings, hooks: tuple,
                        state: dict) -> None:
        """Clip, step the optimizer and the schedule, clear the gradients; the hooks around it."""
        for hook in hooks:
            hook.before_optimizer_step(state["step"])
        if settings.max_grad_norm:
            self.accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for hook in hooks:
            hook.after_optimizer_step(state["step"])
        state["step"] += 1

    def _validate(self, wrapped, validation: Validation, hooks: tuple, keep, state: dict,
                  sinks: tuple) -> tuple[dict | None, bool]:
        """One validation pass (every process evaluates: they must agree on best and stop), under
        the hooks' evaluation weights (EMA). Returns (the kept weights when the metric improved,
        else None; whether patience ran out) and updates best/bad_evals in `state`."""
        n, picked = state["step"], None
        wrapped.eval()
        with ExitStack() as stack:
            for hook in hooks:
                stack.enter_context(hook.evaluation_weights())
            scores = validation.evaluate()
            if scores[validation.metric] > state["best_metric"]:
                picked = keep()  # inside the hooks' weights: the EMA shadow is what gets kept
        wrapped.train()
        for sink in sinks:
            sink({"step": n, **{f"validation_{k}": v for k, v in scores.items()}})
        if picked is not None:
            state.update(best_metric=scores[validation.metric], best_step=n, bad_evals=0)
            return picked, False
        state["bad_evals"] += 1
        return None, bool(validation.patience) and state["bad_evals"] >= validation.patience


def _checkpoint(directory: Path, keep, optimizer, scheduler, state: dict, best: dict | None, hooks: tuple,
                stopped_early: bool, *, over: bool) -> None:
    """The checkpoint after a validation pass: to resume from, or, when the loop is `over`, the
    finished one (the weights the run ends with: the best, or the current ones when none was kept)."""
    if over:
        save_final_checkpoint(directory, keep() if best is None else best, {**state, "stopped_early": stopped_early})
    else:
        save_checkpoint(directory, keep(), optimizer, scheduler, state, best, hooks)


def resumed_early_stop(state: dict, steps: int) -> bool:
    """Whether a resumed run's checkpoint says patience ran out (then the loop takes no step). A
    finished checkpoint (the loop was over when it was written) with steps left fails: it holds no
    optimizer state to take them with."""
    stopped_early = bool(state.pop("stopped_early", False))
    if state.pop("finished", False) and state["step"] < steps and not stopped_early:
        raise UserError(f"the checkpoint is of a run that finished at step {state['step']}, and this one asks for "
                        f"{steps} steps: a finished run has no optimizer state to continue from. Start it again "
                        f"(without resuming), or train into another run directory.")
    return stopped_early


def is_decayed(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay applies to matrices, not to biases and LayerNorm weights (the BERT convention)."""
    return parameter.ndim >= 2 and "LayerNorm" not in name and "layer_norm" not in name


def decay_groups(named_parameters, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: the decayed parameters (`is_decayed`) and the others, at one learning rate."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        if p.requires_grad:
            (decay if is_decayed(name, p) else no_decay).append(p)
    return [g for g in ({"params": decay, "lr": lr, "weight_decay": weight_decay},
                        {"params": no_decay, "lr": lr, "weight_decay": 0.0}) if g["params"]]
