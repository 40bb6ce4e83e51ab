"""How fast does the engine train, next to transformers' Trainer and next to the loop it replaced?

Question: training samples/s of a full fine-tune on BANKING77 (MiniLM, batch 32, max length 64,
1,536 training examples, one epoch), the same model, data and batch for every system:

- `engine`: core.classify.train.fit on core.engine.loop (length-grouped batches, the default);
- `engine-random-batches`: the same with group_by_length=false (batches padded to their longest text);
- `previous-fit`: the loop before the engine (git commit BASE_COMMIT, run from a temporary worktree);
- `trainer`: transformers' Trainer on AutoModelForSequenceClassification (its defaults: random batches);
- `trainer-grouped`: the Trainer with train_sampling_strategy="group_by_length".

Every system does the same extra work inside its timed call: one validation pass on the same 256
validation rows and one checkpoint at the end of the epoch. Each run is a fresh process (no warm
caches), the systems interleaved over `--rounds` rounds (after the first, only `engine`, `trainer`
and `trainer-grouped`); samples/s = training examples / wall time
of the `fit()` / `trainer.train()` call; the load average is recorded beside every timing.

    python -m benchmarks.engine_speed --data-dir ../shared/datasets [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_COMMIT = "b0aaacd"  # the last commit before the engine: its core.classify.train.fit is "previous-fit"
N_TRAIN, N_VAL, BATCH, MAX_LENGTH = 1536, 256, 32, 64
SYSTEMS = ("engine", "previous-fit", "trainer", "engine-random-batches", "trainer-grouped")


def _data(data_dir: str):
    import numpy as np

    try:
        from core.data.catalog import load_classification
        from core.data.splits import set_aside_out_of_scope
    except ModuleNotFoundError:  # previous-fit: the flat core/ of BASE_COMMIT
        from core.data import load_classification, set_aside_out_of_scope

    data, _ = set_aside_out_of_scope(load_classification("banking77", root=data_dir), "oos")
    order = np.random.default_rng(0).permutation(len(data.train))[:N_TRAIN]
    train = [(data.train.texts[i], data.train.labels[i]) for i in order]
    val = list(zip(data.validation.texts, data.validation.labels))[:N_VAL]
    return data.labels, train, val


def run_ours(data_dir: str, group: bool, previous: bool) -> dict:
    import torch

    if previous:  # the flat core/ of BASE_COMMIT, before core moved into wings
        from core.backbones import load_backbone
        from core.config import TrainConfig
        from core.data import Split
        from core.model import build_classifier
        from core.train import fit
    else:
        from core.classify.config import TrainConfig
        from core.classify.train import fit
        from core.data.splits import Split
        from core.models.backbones import load_backbone
        from core.models.classifier import build_classifier

    labels, train, val = _data(data_dir)
    torch.manual_seed(0)
    model = build_classifier(load_backbone("minilm", max_length=MAX_LENGTH), labels)
    extra = {} if previous else {"group_by_length": group}
    cfg = TrainConfig(epochs=1, lr=1e-4, head_lr=1e-3, batch_size=BATCH, warmup=0.1, patience=0, **extra)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = fit(model, Split(*map(list, zip(*train))), Split(*map(list, zip(*val))), cfg, run_dir=Path(run_dir),
                     progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": result.samples_seen, "tokens": result.tokens_seen,
            "validation_accuracy": result.best_metric}


def run_trainer(data_dir: str, group: bool) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import Dataset
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from core.models.backbones import load_backbone

    labels, train, val = _data(data_dir)
    index = {label: i for i, label in enumerate(labels)}
    backbone = load_backbone("minilm")  # loaded once: its directory and its tokenizer
    path, tokenizer = backbone.path, backbone.tokenizer

    class Rows(Dataset):
        def __init__(self, rows):
            enc = tokenizer([t for t, _ in rows], truncation=True, max_length=MAX_LENGTH)
            self.items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                           "labels": index[label]} for i, (_, label) in enumerate(rows)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=BATCH, per_device_eval_batch_size=64,
                                 num_train_epochs=1, learning_rate=1e-4, warmup_steps=0.1, weight_decay=0.01,
                                 eval_strategy="epoch", save_strategy="epoch", logging_steps=10, report_to=[],
                                 train_sampling_strategy="group_by_length" if group else "random", use_cpu=True, disable_tqdm=True, seed=0,
                                 dataloader_num_workers=0)

        def accuracy(pred):
            return {"accuracy": float((np.argmax(pred.predictions, axis=1) == pred.label_ids).mean())}

        trainer = Trainer(model=model, args=args, train_dataset=Rows(train), eval_dataset=Rows(val),
                          data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        acc = [r["eval_accuracy"] for r in trainer.state.log_history if "eval_accuracy" in r]
    return {"seconds": seconds, "samples": len(train), "validation_accuracy": acc[-1] if acc else None}


def one(system: str, data_dir: str) -> dict:
    if system == "engine":
        return run_ours(data_dir, group=True, previous=False)
    if system == "engine-random-batches":
        return run_ours(data_dir, group=False, previous=False)
    if system == "previous-fit":
        return run_ours(data_dir, group=False, previous=True)
    return run_trainer(data_dir, group=system == "trainer-grouped")


def _subprocess(system: str, data_dir: str, worktree: Path) -> dict:
    """Each run in a fresh process; `previous-fit` imports the old package from its worktree."""
    cwd = worktree if system == "previous-fit" else REPO
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(cwd), "PYTHONWARNINGS": "ignore"}
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.engine_speed import one; "
            f"sys.path.remove({str(REPO)!r}); sys.path.insert(0, {str(cwd)!r}); "
            f"[sys.modules.pop(m) for m in list(sys.modules) if m == 'core' or m.startswith('core.')]; "
            f"import core; assert core.__file__.startswith({str(cwd)!r}), core.__file__; "
            f"print('RESULT ' + json.dumps(one({system!r}, {data_dir!r})))")
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not line:
        raise RuntimeError(f"{system} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(line[0][len("RESULT "):])
    return {**result, "samples_per_second": result["samples"] / result["seconds"], "load_average_before": load,
            "load_average_after": os.getloadavg()[0]}


def table(rows: list[dict]) -> str:
    import numpy as np

    by = {}
    for r in rows:
        by.setdefault(r["system"], []).append(r["samples_per_second"])
    trainer = np.mean(by.get("trainer", [float("nan")]))
    lines = ["| system | samples/s (each run) | mean | × Trainer |", "|---|---|---|---|"]
    for system in SYSTEMS:
        if system in by:
            runs = ", ".join(f"{x:.1f}" for x in by[system])
            lines.append(f"| {system} | {runs} | {np.mean(by[system]):.1f} | {np.mean(by[system]) / trainer:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("VERTICALS_DATA"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args()
    # absolute: previous-fit runs in its worktree, where a relative data root points elsewhere
    args.data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    systems = args.systems.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "previous"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), BASE_COMMIT], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for round_ in range(args.rounds):
                for system in systems:
                    if round_ and system in ("engine-random-batches", "previous-fit"):
                        continue  # one round is enough for these (previous-fit = engine-random-batches' batches)
                    row = {"system": system, "round": round_, **_subprocess(system, args.data_dir, worktree)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
    from benchmarks.record import write_record

    md = table(rows)
    write_record("engine_speed", {"protocol": {"data": "banking77", "train_examples": N_TRAIN,
                                               "validation_rows": N_VAL, "batch_size": BATCH,
                                               "max_length": MAX_LENGTH, "epochs": 1, "backbone": "minilm",
                                               "base_commit": BASE_COMMIT}, "runs": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
