"""`verticals recsys ...` through a real subprocess: the train -> index -> recommend pipeline on
the demo catalog with the tiny backbone, and user errors without a traceback."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import needs_real_data, real_data_root


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=timeout)


def test_train_index_recommend_similar_on_the_demo_catalog(tmp_path, tiny_backbone_dir):
    run, idx = tmp_path / "run", tmp_path / "idx"
    out = run_cli("train", "demo_catalog", "--backbone", "tiny", "--steps", "2", "--batch-size", "8", "--out", str(run))
    assert out.returncode == 0, out.stderr
    report = json.loads((run / "train.json").read_text())
    assert report["fit"]["steps"] == 2 and (run / "encoder" / "model.safetensors").is_file()
    out = run_cli("index", "demo_catalog", "--model", str(run), "--out", str(idx), "--factory", "hnsw",
                  "--metadata-columns", "category")
    assert out.returncode == 0 and "indexed 120 items" in out.stdout, out.stderr
    out = run_cli("recommend", str(idx), "--user", "u01", "-k", "5", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 5
    out = run_cli("similar", str(idx), "--text", "garden hose", "-k", "3", "--filter", "category=garden", "--json")
    hits = json.loads(out.stdout)
    assert out.returncode == 0 and len(hits) == 3
    meta = json.loads((idx / "index.json").read_text())["metadata"]
    assert all(meta[h["id"]]["category"] == "garden" for h in hits)


@pytest.mark.parametrize("args,message", [
    (("recommend", "/nonexistent/idx", "--user", "u01"), "build it with `verticals recsys index`"),
    (("recommend", "/nonexistent/idx"), "exactly one of --user"),
    (("evaluate", "no_such_dataset", "--systems", "popular"), "unknown dataset 'no_such_dataset'"),
    (("evaluate", "demo_catalog", "--systems", "popular,magic"), "unknown system(s) magic"),
])
def test_user_errors_exit_nonzero_without_a_traceback(args, message):
    out = run_cli(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_evaluate_prints_metrics_for_the_baselines():
    out = run_cli("evaluate", "demo_catalog", "--systems", "popular,itemknn", "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["itemknn"]["ndcg@10"] > metrics["popular"]["ndcg@10"]


@needs_real_data
def test_movielens_baselines_under_the_protocol():
    from solutions.recsys.baselines import ItemKNN, MostPopular
    from solutions.recsys.data import load_interactions
    from solutions.recsys.protocol import evaluate_scores, split_dataset

    split = split_dataset(load_interactions("movielens_latest_small", root=real_data_root()))
    assert split.threshold == 3.5 and len(split.eval_users()) > 500
    scores = {}
    for model in (MostPopular(), ItemKNN()):
        model.fit(split)
        scores[model.name] = evaluate_scores(lambda us: model.score([split.history(u) for u in us]), split)["ndcg@10"]
    assert scores["item-kNN"] > scores["most-popular"] > 0.05
