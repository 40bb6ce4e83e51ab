"""The monitor loop: read batches -> parse (quarantine the malformed) -> extract entities -> score
-> commit with the source offset -> re-aggregate dirty windows -> evaluate rules -> deliver alerts.

`run_monitor(cfg)` runs until its inputs are exhausted, or with `follow` until `stop()` is true
(the CLI wires SIGINT/SIGTERM to it; the batch in hand is finished first). A kill -9 at any
point loses nothing: see store.py for why. Re-aggregation also runs once at start, to finish
windows a killed run left dirty, and undelivered alerts from earlier runs are retried.
Leaves out: parallel scoring workers (one process saturates 2 cores with the encoder).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.errors import UserError
from solutions.finance.monitor.aggregate import WindowStats, window_start, window_stats
from solutions.finance.monitor.entities import EntityMatcher, load_watchlist
from solutions.finance.monitor.rules import RuleSet, load_rules
from solutions.finance.monitor.sinks import Backoff, build_sink, deliver_due
from solutions.finance.monitor.sources import Line, Malformed, open_source, parse_document
from solutions.finance.monitor.store import Store


@dataclass(frozen=True)
class MonitorConfig:
    inputs: tuple[str, ...]  # JSONL files, directories, or "-" for stdin
    db: Path
    model: str  # a run directory (or its model/), or "zeroshot"
    watchlist: Path | None = None
    rules: Path | None = None
    window: str | None = None  # overrides the rules file's window
    sinks: tuple[str, ...] = ("stdout",)
    follow: bool = False
    batch_size: int = 64
    poll_seconds: float = 1.0
    retry_base_seconds: float = 1.0
    drain_seconds: float = 10.0  # end of a run without --follow: keep retrying deliveries this long


@dataclass
class RunStats:
    lines: int = 0
    new_documents: int = 0
    already_seen: int = 0
    quarantined: int = 0
    alerts: int = 0
    seconds: float = 0.0
    totals: dict = field(default_factory=dict)

    @property
    def documents_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def load_scorer(spec: str):
    """A sentiment classifier: a trained run (default of the recipes) or the zero-shot fallback."""
    from solutions.finance.sentiment import ZERO_SHOT_DESCRIPTIONS, sentiment_columns

    if spec == "zeroshot":
        from core.zeroshot import ZeroShotClassifier

        return ZeroShotClassifier("minilm", ZERO_SHOT_DESCRIPTIONS)
    from core.model import load_classifier

    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"model not found: {path}. Train one with `verticals train finance/sentiment-full "
                        f"--out runs/finance-sentiment` and pass --model runs/finance-sentiment, or use "
                        f"--model zeroshot.")
    model = load_classifier(path / "model" if (path / "model").is_dir() else path)
    sentiment_columns(model.labels)
    return model


def ingest_batch(store: Store, lines: list[Line], *, matcher: EntityMatcher, model, batch_size: int) -> dict:
    """Parse, de-duplicate, extract, score and commit one batch of lines from one source."""
    from solutions.finance.sentiment import score_texts

    docs, quarantined, seen = [], [], set()
    for line in lines:
        if not line.raw.strip():
            continue  # blank lines are not documents and not errors
        try:
            doc = parse_document(line.raw)
        except Malformed as exc:
            quarantined.append((line.start, line.raw, str(exc)))
            continue
        if doc.id not in seen:
            seen.add(doc.id)
            docs.append(doc)
    known = store.known_ids([d.id for d in docs])
    new = [d for d in docs if d.id not in known]
    sentiment = score_texts(model, [d.text for d in new], batch_size=batch_size)
    labels = sentiment.label
    documents, scores, mentions = [], [], []
    for i, doc in enumerate(new):
        documents.append({"id": doc.id, "ts": doc.ts, "ts_text": doc.ts_text, "text": doc.text,
                          "source": doc.source, "origin": lines[0].source_key})
        scores.append({"doc_id": doc.id, "p_negative": float(sentiment.negative[i]),
                       "p_neutral": float(sentiment.neutral[i]), "p_positive": float(sentiment.positive[i]),
                       "score": float(sentiment.score[i]), "label": labels[i]})
        start = window_start(doc.ts, store.window)
        mentions += [(doc.id, entity, start) for entity in matcher.extract(doc.text, doc.tickers)]
    store.commit_batch(source_key=lines[0].source_key, offset=lines[-1].end, documents=documents,
                       scores=scores, mentions=mentions, quarantined=quarantined)
    return {"lines": len(lines), "new": len(new), "seen": len(docs) - len(new), "quarantined": len(quarantined)}


def refresh_windows(store: Store, rules: RuleSet, sink_specs: list[str]) -> list[int]:
    """Recompute every entity's windows from its earliest dirty one (later EWMAs and baselines
    depend on it), evaluate the rules on them, commit; returns the ids of new alerts."""
    new_ids = []
    for entity, since in store.dirty_from().items():
        history = store.aggregates(entity, since - rules.baseline, since)
        ewma = store.last_ewma(entity, since)
        windows: list[WindowStats] = []
        for start, (scores, labels) in sorted(store.window_scores(entity, since).items()):
            windows.append(window_stats(entity, start, rules.window, scores, labels, ewma, rules.ewma_alpha))
            ewma = windows[-1].ewma
        timeline = history + windows
        starts = [w.start for w in timeline]
        alerts = []
        for w in windows:
            trailing = timeline[bisect.bisect_left(starts, w.start - rules.baseline):bisect.bisect_left(starts, w.start)]
            for finding in rules.evaluate(w, trailing):
                alerts.append({"entity": entity, "rule": finding.rule, "window_start": w.start, "window_end": w.end,
                               "value": finding.value, "baseline": finding.baseline, "detail": finding.detail,
                               "evidence": store.evidence(entity, w.start, finding.evidence)})
        new_ids += store.commit_windows(entity, since, windows, alerts, sink_specs)
    return new_ids


def run_monitor(cfg: MonitorConfig, *, model=None, stop: Callable[[], bool] = lambda: False,
                log: Callable[[str], None] = lambda _: None) -> RunStats:
    rules = load_rules(cfg.rules, cfg.window)
    matcher = EntityMatcher(load_watchlist(cfg.watchlist))
    sinks = {spec: build_sink(spec) for spec in cfg.sinks}
    sources = [open_source(spec, cfg.follow) for spec in cfg.inputs]
    if sum(spec == "-" for spec in cfg.inputs) > 1:
        raise UserError("stdin ('-') can be given once")
    store = Store(cfg.db, rules.window)
    model = model if model is not None else load_scorer(cfg.model)
    backoff = Backoff(base=cfg.retry_base_seconds)
    stats, started = RunStats(), time.perf_counter()
    try:
        stats.alerts += len(refresh_windows(store, rules, list(sinks)))  # windows a killed run left dirty
        deliver_due(store, sinks, backoff)
        while not stop():
            got = 0
            for source in sources:
                for batch in source.batches(store.offset, cfg.batch_size):
                    done = ingest_batch(store, batch, matcher=matcher, model=model, batch_size=cfg.batch_size)
                    got += done["lines"]
                    stats.lines += done["lines"]
                    stats.new_documents += done["new"]
                    stats.already_seen += done["seen"]
                    stats.quarantined += done["quarantined"]
                    stats.alerts += len(refresh_windows(store, rules, list(sinks)))
                    deliver_due(store, sinks, backoff)
                    if stop():
                        break
            if not cfg.follow:  # one pass reads every source to its end
                break
            if got == 0:
                deliver_due(store, sinks, backoff)
                time.sleep(cfg.poll_seconds)
        stats.seconds = time.perf_counter() - started
        _drain(store, sinks, backoff, 0 if cfg.follow else cfg.drain_seconds, log)
        stats.totals = store.counts() | {"quarantine_reasons": store.quarantine_reasons()}
    finally:
        store.close()
    return stats


def _drain(store: Store, sinks: dict, backoff: Backoff, seconds: float, log) -> None:
    """Keep retrying undelivered alerts for up to `seconds`; what is left stays for the next run."""
    deadline = time.monotonic() + seconds
    while store.pending_deliveries() and time.monotonic() < deadline:
        deliver_due(store, sinks, backoff)
        if store.pending_deliveries():
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    if store.pending_deliveries():
        log(f"{store.pending_deliveries()} alert deliveries still pending; they are kept and retried next run")
