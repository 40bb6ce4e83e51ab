"""Distributed training on 2 CPU processes (gloo), launched the way a user launches it.

One launch of tests/distributed/worker.py under `torch.distributed.run --nproc_per_node 2` runs
every trainer (classification fit, checkpoint + resume, the contrastive few-shot phase, the recsys
item encoder, SimCSE and MLM adaptation); the same worker run as one process is the reference.
Checked: both ranks end with identical weights; 2 processes match 1 process at the same global
batch (dropout off) within 1e-4; resume from a checkpoint under 2 processes matches the
uninterrupted run; only rank 0 writes run and output directories. Then `verticals train ...
--nproc 2` end to end through the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "distributed" / "worker.py"
TRAINERS = ("classify", "resumed", "contrastive", "item-encoder")
TOLERANCE = 1e-4  # 2 processes vs 1 at the same global batch: float summation order only


def _env(tmp: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "VERTICALS_CACHE": os.environ.get("VERTICALS_CACHE", str(tmp / "cache"))}


def _run(cmd: list[str], tmp: Path, timeout: int = 600) -> None:
    done = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def _launch(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_backbone_dir):
    tmp = tmp_path_factory.mktemp("distributed")
    _run([sys.executable, str(WORKER), str(tmp / "one")], tmp)
    _run(_launch(2) + [str(WORKER), str(tmp / "two")], tmp)
    return tmp


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_both_ranks_end_with_identical_weights(runs, trainer):
    rank0 = load_file(runs / "two" / f"{trainer}-rank0.safetensors")
    rank1 = load_file(runs / "two" / f"{trainer}-rank1.safetensors")
    assert _max_diff(rank0, rank1) == 0.0


@pytest.mark.parametrize("trainer", TRAINERS)
def test_two_processes_match_one_at_the_same_global_batch(runs, trainer):
    one = load_file(runs / "one" / f"{trainer}-single.safetensors")
    two = load_file(runs / "two" / f"{trainer}-rank0.safetensors")
    start = load_file(runs / "one" / "classify-single.safetensors")  # trained: far from its start
    assert _max_diff(one, two) < TOLERANCE
    if trainer == "classify":
        assert any(not torch.equal(v, start[k]) for k, v in two.items())


def test_resume_under_two_processes_matches_the_uninterrupted_run(runs):
    straight = load_file(runs / "two" / "classify-rank0.safetensors")
    resumed = load_file(runs / "two" / "resumed-rank0.safetensors")
    assert _max_diff(straight, resumed) < 1e-6


def test_only_rank_0_writes(runs):
    two = runs / "two" / "runs"
    assert (two / "straight" / "metrics.jsonl").is_file() and (two / "straight" / "checkpoint").is_dir()
    other = two / "straight-rank1"
    assert not other.exists() or not any(other.iterdir())
    for name in ("simcse", "mlm"):  # adaptation writes one backbone directory
        assert (runs / "two" / name / "model.safetensors").is_file()


def test_verticals_train_with_nproc_2_writes_one_complete_run(tmp_path, tiny_backbone_dir):
    out = tmp_path / "run"
    _run([sys.executable, "-m", "verticals.cli", "train", "support/intent-demo", "backbone=tiny", "max_steps=4",
          "eval_every=2", "--out", str(out), "--nproc", "2", "--quiet"], tmp_path)
    from core.models.classifier import load_classifier
    from core.runs.rundir import read_report

    report = read_report(out)
    assert report["fit"]["steps"] == 4
    model = load_classifier(out / "model")
    assert model.predict_proba(["my card was declined"]).shape == (1, len(model.labels))


def test_recsys_item_encoder_recipe_with_nproc_2(tmp_path, tiny_backbone_dir):
    out = tmp_path / "shop"
    _run([sys.executable, "-m", "verticals.cli", "train", "recsys/item-encoder", "data=demo_catalog", "backbone=tiny",
          "train.steps=2", "train.batch_size=4", "train.min_support=1", "--out", str(out), "--nproc", "2", "--quiet"],
         tmp_path)
    from core.runs.rundir import read_report

    report = read_report(out)
    assert report["fit"]["steps"] == 2 and report["fit"]["processes"] == 2
    assert (out / "encoder" / "model.safetensors").is_file()
