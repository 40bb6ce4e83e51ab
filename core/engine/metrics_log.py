"""metrics.jsonl: the rows an engine run writes (training loss and learning rate every `log_every`
steps, each validation pass's metrics), appended as they come so a crash keeps what was written.

Hand-written (a dozen lines of JSON lines) rather than a tracker's format: a run directory must be
readable without one (core.runs.tracking mirrors the rows to a tracker when a recipe asks for it).
Leaves out: the loop that writes the rows (core.engine.loop) and the loss curve drawn from them
(core.evaluation.metrics.plot_loss_curve).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.foundation import distributed


class MetricsLog:
    """Append-only metrics.jsonl; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = []
        if keep_until_step is not None and self.path.is_file():
            self.rows = [r for r in map(json.loads, self.path.read_text().splitlines())
                         if r.get("step", 0) <= keep_until_step]
        if distributed.is_main():
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    @staticmethod
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
