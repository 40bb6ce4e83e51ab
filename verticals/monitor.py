"""The finance risk monitor in the Python API: `verticals.Monitor` (made by `verticals.monitor`).

    monitor = verticals.monitor("runs/sentiment", db="monitor.db", watchlist="watch.yaml")
    monitor.run("news.jsonl"); monitor.alerts(); monitor.report("report.html")

A thin layer over solutions.finance.monitor (its config, loop, store, rules and HTML report), with
the same validation and errors.
Leaves out: the monitor itself, and the command line (`verticals finance ...`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path

from core.foundation.durable import atomic_write
from core.foundation.errors import UserError
from core.foundation.postgres import is_database_url
from core.foundation.quiet import quieted


class Monitor:
    """Scores per company over time and risk alerts, in a crash-safe SQLite store
    (solutions.finance.monitor). `model`: a Predictor, a run directory, or "zeroshot" (a
    verticals.Run monitors through `run.monitor(db)` or `verticals.monitor(run, db)`). `run(*inputs)`
    reads JSONL files or folders (each resumes where it stopped); `ingest(documents)` first appends
    the documents durably to a JSONL file in `<db>.inbox/`, so what was handed over is never lost,
    then runs on it."""

    def __init__(self, model, db: str | os.PathLike, *, watchlist: str | os.PathLike | None = None,
                 rules: str | os.PathLike | None = None, window: str | None = None, sinks: Iterable[str] = (),
                 runtime: str = "torch", batch_size: int = 64, inbox: str | os.PathLike | None = None):
        from solutions.finance.monitor.loop import MonitorConfig  # lazy: its stores and sinks slow `import verticals`

        shared = is_database_url(str(db))
        self.db = str(db) if shared else Path(db)
        self.inbox = Path(inbox) if inbox else None if shared else self.db.with_name(self.db.name + ".inbox")
        spec = model if isinstance(model, (str, os.PathLike)) else "python object"
        self._model = None if isinstance(model, (str, os.PathLike)) else model
        self.config = MonitorConfig(inputs=(), db=self.db, model=str(spec), runtime=runtime,
                                    watchlist=Path(watchlist) if watchlist else None,
                                    rules=Path(rules) if rules else None, window=window, sinks=tuple(sinks),
                                    batch_size=batch_size, drain_seconds=0.0)

    def __repr__(self) -> str:
        return f"Monitor(db={str(self.db)!r})"

    def _scorer(self):
        if self._model is None:
            from solutions.finance.monitor.loop import load_scorer  # lazy: as in __init__

            with quieted():
                self._model = load_scorer(self.config.model, self.config.runtime)
        return self._model

    def run(self, *inputs: str | os.PathLike):
        """Ingest JSONL files / folders of *.jsonl to their end, aggregate, alert; returns the
        run's stats (lines, new documents, quarantined, alerts, totals)."""
        from solutions.finance.monitor.loop import run_monitor  # lazy: as in __init__

        if not inputs:
            raise UserError("give one or more JSONL files or folders to read")
        with quieted():
            return run_monitor(replace(self.config, inputs=tuple(str(i) for i in inputs)), model=self._scorer())

    def ingest(self, documents: Iterable[dict | str]):
        """Append `documents` ({"id", "text", "ts", "tickers"?, ...} or JSON lines) to a new file in
        `<db>.inbox/` (written and fsynced before anything is scored), then `run` it."""
        if self.inbox is None:
            raise UserError("with a PostgreSQL database, give Monitor(..., inbox=FOLDER): ingest writes the documents "
                            "there durably before scoring them")
        inbox = self.inbox
        inbox.mkdir(parents=True, exist_ok=True)
        lines = [doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False) for doc in documents]
        if any("\n" in line for line in lines):
            raise UserError("a document given as a string must be one JSON line (no newlines)")
        path = inbox / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in lines), encoding="utf-8"))
        return self.run(path)

    def _store(self):
        from solutions.finance.monitor.loop import open_store  # lazy: as in __init__
        from solutions.finance.monitor.rules import load_rules  # lazy: as in __init__

        rules = load_rules(self.config.rules, self.config.window)
        return open_store(self.db, rules.window, rules.lateness)

    def alerts(self) -> list[dict]:
        """Every alert raised so far, oldest window first."""
        store = self._store()
        try:
            return store.alerts()
        finally:
            store.close()

    def timeline(self, entity: str) -> list[dict]:
        """The entity's windows: start, documents, mean score, negative share."""
        store = self._store()
        try:
            return [asdict(w) for w in store.aggregates(entity)]
        finally:
            store.close()

    def counts(self) -> dict:
        store = self._store()
        try:
            return store.counts() | {"quarantine_reasons": store.quarantine_reasons()}
        finally:
            store.close()

    def report(self, out: str | os.PathLike, max_entities: int = 40) -> Path:
        """The self-contained HTML report (timelines and alerts per company)."""
        from solutions.finance.monitor.report import render_report  # lazy: as in __init__

        if not isinstance(self.db, Path):
            raise UserError("the HTML report reads a SQLite monitor database; a PostgreSQL one is not supported yet")
        return render_report(self.db, Path(out), max_entities=max_entities)
