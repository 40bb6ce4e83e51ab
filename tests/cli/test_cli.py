"""The `verticals` command through a real subprocess (`python -m verticals.cli`, the console entry)."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import needs_real_data, write_csv


def run_cli(*args, stdin=None, env=None, timeout=300):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "verticals.cli", *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    out = run_cli("--help")
    assert out.returncode == 0 and "train" in out.stdout and "predict" in out.stdout
    assert time.perf_counter() - start < 5  # no torch/transformers import for --help


def test_recipes_lists_the_support_recipes():
    out = run_cli("recipes")
    assert out.returncode == 0 and "support/intent-lora" in out.stdout and "support/intent-full" in out.stdout


@pytest.mark.parametrize("args,message", [
    (("train", "support/nope"), "unknown recipe 'support/nope'"),
    (("train", "support/intent-lora", "learning_rate=1"), "unknown key 'learning_rate'; valid keys:"),
    (("train", "support/intent-lora", "train.lrate=1"), "Did you mean 'train.lr'?"),
    (("train", "/nonexistent/mine.yaml"), "recipe not found: /nonexistent/mine.yaml"),
    (("train", "support/intent-lora", "--nproc", "0"), "not a number of processes"),
    (("train", "support/intent-lora", "epochs=many"), "bad value for 'epochs'"),
    (("eval", "/nonexistent/run"), "not a finished run directory"),
    (("predict", "/nonexistent/run", "hello"), "does not exist; give a run directory"),
])
def test_user_errors_exit_nonzero_with_a_message_and_no_traceback(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_missing_data_file_is_reported(tmp_path):
    out = run_cli("train", "support/intent-lora", "backbone=tiny", "--data-dir", str(tmp_path),
                  "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "train.csv not found" in out.stderr and "Traceback" not in out.stderr


def test_checksum_mismatch_is_reported(tmp_path):
    (tmp_path / "banking77").mkdir()
    write_csv(tmp_path / "banking77" / "train.csv", [("hello", "card_arrival")], header=("text", "category"))
    out = run_cli("train", "support/intent-lora", "backbone=tiny", "--data-dir", str(tmp_path),
                  "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "checksum" in out.stderr


@pytest.mark.parametrize("content,message", [
    (b"text,label\n", "no data rows"),
    (b"body,label\nhello,x\n", "no column 'text'"),
    (b"text,queue\nhello,x\n", "no column 'label'"),
    ("text,label\nEspa\xf1a,x\n".encode("latin-1"), "not valid utf-8"),
])
def test_bad_own_data_files_exit_nonzero_with_a_message(tmp_path, content, message):
    (tmp_path / "d.csv").write_bytes(content)
    out = run_cli("train", "support/intent-lora", "backbone=tiny", f"data={tmp_path / 'd.csv'}",
                  "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_train_predict_eval_round_trip_on_own_data(toy_dir, tmp_path):
    run = tmp_path / "run"
    out = run_cli("train", "support/intent-lora", "backbone=tiny", f"data={toy_dir}", "max_steps=2",
                  "--out", str(run), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "accuracy=" in out.stdout and "cost:" in out.stdout

    out = run_cli("predict", str(run), "my card was declined", "transfer to another bank")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["my card was declined", "transfer to another bank"]
    assert all(r["label"] in ("card", "transfer") and 0 <= r["confidence"] <= 1 for r in rows)

    stdin = '{"text": "card declined"}\n{"text": "pending transfer"}\n'
    out = run_cli("predict", str(run), stdin=stdin)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2

    out = run_cli("eval", str(run), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["n"] == 12

    unseen = write_csv(tmp_path / "unseen.csv", [("please refund me", "refund"), ("card declined", "card")])
    out = run_cli("eval", str(run), "--data", str(unseen))
    assert out.returncode == 2 and "never seen in training: 'refund'" in out.stderr


def test_predict_rejects_bad_stdin(toy_dir, tmp_path):
    out = run_cli("predict", str(tmp_path), stdin="not json\n")
    assert out.returncode == 2 and "stdin line 1 is not JSON" in out.stderr


@needs_real_data
def test_packaged_minilm_fine_tunes_a_few_steps_on_banking77(tmp_path):
    """Integration: the real backbone and real data, a few LoRA steps on a 64-example subset."""
    run = tmp_path / "run"
    out = run_cli("train", "support/intent-lora", "train_limit=64", "max_steps=3", "batch_size=16",
                  "--out", str(run), "--quiet", timeout=900)
    assert out.returncode == 0, out.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["test"]["n"] == 3080
    assert report["cost"]["trainable_params"] / report["cost"]["total_params"] < 0.02
    # a probe-initialised head on 64 examples is already far above chance (1/77)
    assert report["metrics"]["test"]["accuracy"] > 0.1


def test_support_route_reads_jsonl_and_rejects_bad_lines(toy_dir, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "support/intent-lora", "backbone=tiny", f"data={toy_dir}", "max_steps=2",
                   "--out", str(run), "--quiet").returncode == 0
    out = run_cli("support", "route", str(run), stdin='{"text": "card declined"}\n"transfer pending"\n')
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2 and {"intent", "queue", "fallback_reason", "top_k"} <= set(rows[0])
    out = run_cli("support", "route", str(run), "--input", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "cannot read --input" in out.stderr
    out = run_cli("support", "route", str(run), stdin='{"txt": "x"}\n')
    assert out.returncode == 2 and "stdin line 1: needs a non-empty string field 'text'" in out.stderr
