"""Benchmark records: one JSON per run (config, git commit, versions, hardware, data card,
protocol, seeds, metrics, cost) and the markdown table generated from it, never typed by hand."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from core.runs.rundir import environment

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=RESULTS.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_record(name: str, record: dict, table_md: str) -> Path:
    """Write results/<name>.json and results/<name>.md, and refresh the README block
    between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->` if present."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": git_commit(),
              "environment": environment(), **record}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    (RESULTS / f"{name}.md").write_text(table_md)
    if README.is_file():
        text = README.read_text()
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if pattern.search(text):
            README.write_text(pattern.sub(lambda m: m.group(1) + table_md + "\n" + m.group(2), text))
    return path
