"""What `verticals recsys index / recommend / similar` show a person: a progress bar while
indexing, titles beside ids (kept in the index directory), through a real subprocess."""

import json
import os
import subprocess
import sys


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=timeout, check=False)


def test_index_shows_progress_and_recommend_similar_print_titles(tmp_path, tiny_backbone_dir):
    idx = tmp_path / "idx"
    out = run_cli("index", "demo_catalog", "--model", "tiny", "--out", str(idx))
    assert out.returncode == 0, out.stderr
    assert "embedding items" in out.stderr and "120/120" in out.stderr
    titles = json.loads((idx / "titles.json").read_text())
    assert titles["i056"].startswith("Expandable Garden Hose 30 m. garden.")
    out = run_cli("similar", str(idx), "--item", "i056", "-k", "3")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 3, out.stderr
    for line in lines:
        item_id = line.split()[1]
        assert titles[item_id][:30] in line  # the title, cut to fit a terminal line
    hits = json.loads(run_cli("recommend", str(idx), "--user", "u01", "-k", "2", "--json").stdout)
    assert [h["title"] for h in hits] == [titles[h["id"]] for h in hits]


def test_index_quiet_draws_no_bar(tmp_path, tiny_backbone_dir):
    out = run_cli("index", "demo_catalog", "--model", "tiny", "--out", str(tmp_path / "idx"), "--quiet")
    assert out.returncode == 0 and "embedding items" not in out.stderr, out.stderr
