"""What do 2 processes buy on this machine, and do they train the same model as 1?

Question: a BANKING77 full fine-tune (MiniLM, 1,536 training examples, global batch 32, max length
64, one epoch, dropout off so that runs can be compared weight for weight) trained by core.classify.train.fit
on the engine as (a) 1 process with 2 threads, (b) 1 process with 1 thread, (c) 2 processes x 1
thread (`torch.distributed.run --nproc_per_node 2`, gloo). Recorded: samples/s of the fit() call
(rank 0's clock; one validation pass and a checkpoint inside, as in benchmarks/engine_speed.py), the
load average, and the largest absolute difference between the weights of (c) and of (a).

    python -m benchmarks.distributed --data-dir ../shared/datasets

Launch commands for more hardware (not run here; see the README): 8 GPUs on one machine
`verticals train RECIPE --nproc 8 device=cuda`; 2 machines x 8 GPUs: on each machine
`torchrun --nnodes 2 --nproc_per_node 8 --node_rank {0|1} --rdzv_backend c10d
--rdzv_endpoint HOST0:29500 -m verticals.cli train RECIPE device=cuda --out SHARED_DIR`.
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


def worker(data_dir: str, out: Path) -> None:
    """One training run (under a launcher or alone): rank 0 writes weights + timing to `out`."""
    import torch
    from safetensors.torch import save_file

    from benchmarks.engine_speed import BATCH, MAX_LENGTH, _data
    from core.foundation import distributed
    from core.models.backbones import load_backbone
    from core.classify.config import TrainConfig
    from core.data.splits import Split
    from core.models.classifier import build_classifier
    from core.classify.train import fit

    labels, train, val = _data(data_dir)
    torch.manual_seed(0)
    model = build_classifier(load_backbone("minilm", max_length=MAX_LENGTH), labels, dropout=0.0)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = TrainConfig(epochs=1, lr=1e-4, head_lr=1e-3, batch_size=BATCH, warmup=0.1, patience=0)
    run_dir = out / "run"
    start = time.perf_counter()
    result = fit(model, Split(*map(list, zip(*train))), Split(*map(list, zip(*val))), cfg, run_dir=run_dir,
                 progress=False)
    seconds = time.perf_counter() - start
    if distributed.is_main():
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, out / "weights.safetensors")
        (out / "timing.json").write_text(json.dumps({
            "seconds": seconds, "samples": result.samples_seen, "samples_per_second": result.samples_seen / seconds,
            "processes": distributed.world_size(), "threads_per_process": torch.get_num_threads(),
            "validation_accuracy": result.best_metric}))


def launch(name: str, nproc: int, threads: int, data_dir: str, tmp: Path) -> dict:
    out = tmp / name
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO)}
    script = ["-m", "benchmarks.distributed", "--worker", str(out), "--data-dir", data_dir]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, *script]
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    timing = json.loads((out / "timing.json").read_text())
    return {"name": name, **timing, "load_average_before": load, "load_average_after": os.getloadavg()[0],
            "weights": str(out / "weights.safetensors")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("VERTICALS_DATA"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.data_dir, Path(args.worker))
        return
    from safetensors.torch import load_file

    from benchmarks.record import write_record

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [launch("1 process x 2 threads", 1, 2, args.data_dir, tmp),
                launch("1 process x 1 thread", 1, 1, args.data_dir, tmp),
                launch("2 processes x 1 thread (gloo)", 2, 1, args.data_dir, tmp)]
        for row in rows:
            print(json.dumps(row), flush=True)
        one, two = load_file(rows[0]["weights"]), load_file(rows[2]["weights"])
        diff = max(float((one[k] - two[k]).abs().max()) for k in one)
        scale = max(float(one[k].abs().max()) for k in one)
    for row in rows:
        row.pop("weights")
    lines = ["| run | samples/s | wall s | validation accuracy | load avg before |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['samples_per_second']:.1f} | {r['seconds']:.1f} | {100 * r['validation_accuracy']:.1f}% | "
              f"{r['load_average_before']:.2f} |" for r in rows]
    lines += ["", f"Largest absolute weight difference, 2 processes vs 1 (same global batch 32, dropout off): "
                  f"{diff:.2e} (largest weight magnitude {scale:.2f})."]
    md = "\n".join(lines)
    write_record("distributed", {"protocol": {"data": "banking77", "train_examples": 1536, "global_batch": 32,
                                              "epochs": 1, "dropout": 0.0, "backbone": "minilm"},
                                 "runs": rows, "max_abs_weight_difference": diff}, md)
    print(md)


if __name__ == "__main__":
    main()
