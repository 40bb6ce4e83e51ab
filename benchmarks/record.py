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
REPO = Path(__file__).resolve().parent.parent
# the pages that may hold `<!-- bench:<name> -->` blocks; docs/results links to benchmarks/results
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=RESULTS.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def page_links(table_md: str) -> str:
    """The table as a docs page shows it: plots under results/ (`x.png` and `benchmarks/results/x.png`
    as results/<name>.md and the old README wrote them)."""
    return re.sub(r"\]\((?:benchmarks/results/)?([\w.-]+\.png)\)", r"](results/\1)", table_md)


def write_record(name: str, record: dict, table_md: str) -> Path:
    """Write results/<name>.json and results/<name>.md, and refresh the block between
    `<!-- bench:<name> -->` and `<!-- /bench:<name> -->` in the README or the docs page that holds it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": git_commit(),
              "environment": environment(), **record}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    (RESULTS / f"{name}.md").write_text(table_md)
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    for page in PAGES:
        text = page.read_text() if page.is_file() else ""
        if pattern.search(text):
            page.write_text(pattern.sub(lambda m: m.group(1) + page_links(table_md) + "\n" + m.group(2), text))
    return path
