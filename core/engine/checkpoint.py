"""Training checkpoints of the engine: trainable weights, optimizer, scheduler and RNG states.

`save_checkpoint` writes checkpoint/ (weights and optimizer tensors as safetensors, the rest as
JSON; the best weights only when they differ from the current ones, else `best_is_trainable` in
state.json, which saves a quarter of a full fine-tune's checkpoint) next to the previous one and
swaps them, so a crash mid-write leaves a whole checkpoint;
`save_final_checkpoint` is the checkpoint of a loop that is over (its last step, or patience ran
out): only the weights the run ends with, the RNG states and state.json marked `finished`. Nothing
resumes training from it, so the optimizer (AdamW's two moments: two thirds of a full fine-tune's
checkpoint bytes), the schedule, the hooks' tensors and a second copy of the weights are left out;
it is there for a crash between the loop's end and the caller saving its model, after which a
resumed run takes these weights and no step;
`load_checkpoint` restores what `Engine.run` needs to resume the exact step. Only trainable
tensors are saved (LoRA runs checkpoint their adapters, not the frozen encoder).
Leaves out: the loop that calls them (core.engine.loop) and the final model (core.models.classifier).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from core.foundation import distributed

# ---------------------------------------------------------------- checkpoints (safetensors only)

def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def load_trainable(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same tensors by name and value (the best weights are often the current ones: one file then)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {f"{idx}.{key}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous().cpu()
               for idx, st in sd["state"].items() for key, v in st.items()}
    return tensors, sd["param_groups"]


def _restore_optimizer(optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_states() -> list[torch.Tensor]:
    """Every process's torch CPU RNG state (dropout masks), gathered so rank 0 can save them all."""
    mine = torch.get_rng_state()
    if not distributed.is_distributed():
        return [mine]
    import torch.distributed as dist  # lazy: torch costs seconds of start-up

    states = [None] * distributed.world_size()
    dist.all_gather_object(states, mine)
    return states


def _swap_in(directory: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temp dir next to `directory`, which is then swapped in: a crash
    mid-write leaves the previous checkpoint (or, mid-swap, `directory`.old: see _checkpoint_path)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cpu().contiguous() for k, v in tensors.items()}


def save_checkpoint(directory: Path, weights: dict[str, torch.Tensor], optimizer, scheduler, state: dict,
                    best: dict | None, hooks: tuple = ()) -> None:
    """A checkpoint to resume training from. Rank 0 writes it (`_swap_in`). Collective: every
    process must call it (the RNG states are gathered)."""
    rngs = _rng_states()

    def write(tmp: Path) -> None:
        save_file(_cpu(weights), tmp / "trainable.safetensors")
        opt_tensors, groups = _optimizer_tensors(optimizer)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file({f"rank{r}": s for r, s in enumerate(rngs)}, tmp / "rng.safetensors")
        same = best is not None and _equal(best, weights)  # the step that just improved: write its weights once
        if best is not None and not same:
            save_file(_cpu(best), tmp / "best.safetensors")
        for hook in hooks:
            if hook.state():
                save_file(_cpu(hook.state()), tmp / f"{hook.name}.safetensors")
        (tmp / "state.json").write_text(json.dumps(
            {**state, "param_groups": groups, "scheduler": scheduler.state_dict(),
             "world_size": distributed.world_size(), "best_is_trainable": same}, default=float))

    if distributed.is_main():
        _swap_in(directory, write)
    distributed.barrier()


def save_final_checkpoint(directory: Path, weights: dict[str, torch.Tensor], state: dict) -> None:
    """The checkpoint of a finished loop (module docstring): `weights`, the ones the run ends with
    (its best), the RNG states and `state` marked finished. Collective, as save_checkpoint."""
    rngs = _rng_states()

    def write(tmp: Path) -> None:
        save_file(_cpu(weights), tmp / "trainable.safetensors")
        save_file({f"rank{r}": s for r, s in enumerate(rngs)}, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps(
            {**state, "world_size": distributed.world_size(), "finished": True}, default=float))

    if distributed.is_main():
        _swap_in(directory, write)
    distributed.barrier()


def _checkpoint_path(directory: Path) -> Path:
    directory = Path(directory)
    if not (directory / "state.json").is_file() and (directory.with_name(directory.name + ".old") / "state.json").is_file():
        return directory.with_name(directory.name + ".old")  # crashed during the swap
    return directory


def has_checkpoint(directory: Path) -> bool:
    return (_checkpoint_path(directory) / "state.json").is_file()


def load_checkpoint(directory: Path, restore, optimizer, scheduler, hooks: tuple = ()) -> tuple[dict, dict | None]:
    """Every process reads the same checkpoint; each takes back its own RNG state (or rank 0's
    when the run is resumed on a different number of processes). A finished checkpoint
    (save_final_checkpoint) restores its weights and RNG states only, returns them as the best
    weights and leaves `finished` in the state; the optimizer, schedule and hooks are left as they are."""
    directory = _checkpoint_path(directory)
    state = json.loads((directory / "state.json").read_text())
    weights = load_file(directory / "trainable.safetensors")
    restore(weights)  # copies into the parameters: `weights` stays as read, so it can be `best` below
    state.pop("world_size", None)
    rngs = load_file(directory / "rng.safetensors")
    torch.set_rng_state(rngs.get(f"rank{distributed.rank()}", rngs["rank0"]))
    if state.get("finished"):
        return state, weights
    _restore_optimizer(optimizer, load_file(directory / "optimizer.safetensors"), state.pop("param_groups"))
    scheduler.load_state_dict(state.pop("scheduler"))
    best = (weights if state.pop("best_is_trainable", False)
            else load_file(directory / "best.safetensors") if (directory / "best.safetensors").is_file() else None)
    for hook in hooks:
        path = directory / f"{hook.name}.safetensors"
        if path.is_file():
            hook.load_state(load_file(path))
    return state, best
