"""The monitor loop: read batches -> parse (quarantine the malformed) -> extract entities -> score
each document and each company it mentions, sentence by sentence (scoring.py) -> commit with the source offset -> re-aggregate dirty windows -> evaluate the rules on windows
that have closed -> deliver alerts.

`run_monitor(cfg)` runs until its inputs are exhausted, or with `follow` until `stop()` is true
(the CLI wires SIGINT/SIGTERM to it; the batch in hand is finished first). A kill -9 at any
point loses nothing: see store.py for why. Re-aggregation and alert evaluation also run once at
start, to finish what a killed run left, and undelivered alerts from earlier runs are retried.

One line never stops the monitor: whatever goes wrong while reading, parsing, validating,
scoring or storing one line (sources.py and store.py list the known cases; any other exception
counts too) quarantines that line with the reason, and the rest of its batch is stored. Scoring
is isolated the same way (scoring.py): a batch the model fails on is scored one document at a time,
and only if the model also fails on a plain probe text is the error raised (a broken model is not a
bad line). A company's timeline, aggregates and alerts read its own score in each document (the
sentences that name it), not the document's.

Alerts are deterministic: a window is evaluated once, when it is closed (the stream's watermark,
its latest stored timestamp, passed the window's end plus `lateness`, or the input ended: a run
without `follow` closes every window when it has read everything), with all its on-time
documents; the alert is created then, with its final value and evidence, and delivered once. The
same input gives the same alerts wherever a run was killed, and whatever the batch size with a
torch or fp32 ONNX model (the int8 ONNX model quantises activations per batch: a sentence's
logits move by up to ~0.7 with its batch-mates, about 1% of labels flip, measured). The cost
is latency (an alert comes when its window closes, not at the first document that crosses the
threshold) and late documents (those whose window was already closed when they arrived) are
stored, scored and charted but never change an alert. A run without `follow` takes its input
as complete: lines appended afterwards to a window it closed are late for the next run (watch a
growing file with `follow` instead).
Every score row names the model version that made it (`model_version`: the run directory's
name and a hash of its weights, or `zeroshot`), so an analyst's correction is tied to the model
it corrects and a retrained model's scores are told apart from the old one's.
Several workers: `redis://` inputs (a consumer group) and a `postgresql://` --db let N processes
share one stream and one store (redis_source.py, store_postgres.py say how nothing is lost or
counted twice). Leaves out: parallel scoring threads in one process (it saturates its cores).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.foundation.errors import UserError
from core.foundation.postgres import is_database_url
from core.models.predictor import load_run, model_dir
from solutions.finance.monitor.aggregate import WindowStats, window_stats
from solutions.finance.entities import EntityMatcher, load_watchlist
from solutions.finance.monitor.lines import MAX_LINE_BYTES, Line
from solutions.finance.monitor.rules import RuleSet, load_rules
from solutions.finance.monitor.delivery import DeliveryWorker
from solutions.finance.monitor.sinks import Backoff, build_sink, deliver_due
from solutions.finance.monitor.sources import BAD_TICKERS, Document, Malformed, open_source, parse_document
from solutions.finance.monitor.scoring import score_documents
from solutions.finance.monitor.store import Record, Store
from solutions.finance.monitor.store_postgres import PostgresStore
from solutions.finance.sentiment import ZERO_SHOT_DESCRIPTIONS, sentiment_columns

MAX_FUTURE_SECONDS = 86400  # a document dated further ahead of the clock is quarantined


@dataclass(frozen=True)
class MonitorConfig:
    inputs: tuple[str, ...]  # JSONL files, directories, or "-" for stdin
    db: Path | str  # a SQLite file, or a postgresql:// URL (store_postgres.py)
    model: str  # a run directory (or its model/), or "zeroshot"
    runtime: str = "torch"  # torch | onnx | onnx-int8 (core.models.predictor.load_run)
    watchlist: Path | None = None
    rules: Path | None = None
    window: str | None = None  # overrides the rules file's window
    sinks: tuple[str, ...] = ("stdout",)
    follow: bool = False
    batch_size: int = 64
    poll_seconds: float = 1.0
    retry_base_seconds: float = 1.0
    drain_seconds: float = 10.0  # end of a run without --follow: keep retrying deliveries this long
    max_line_bytes: int = MAX_LINE_BYTES  # a longer input line is quarantined
    bad_tickers: str = "quarantine"  # a document's ticker neither cashtag-shaped nor watched: quarantine | ignore

    def __post_init__(self):
        if self.bad_tickers not in BAD_TICKERS:
            raise UserError(f"bad_tickers={self.bad_tickers!r}: choose one of {', '.join(BAD_TICKERS)}")


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


def load_scorer(spec: str, runtime: str = "torch"):
    """A sentiment classifier (a core.models.predictor.Predictor): a trained run, loaded in `runtime`
    (torch, onnx, onnx-int8), or the zero-shot fallback."""
    if spec == "zeroshot":
        from core.models.zeroshot import ZeroShotClassifier  # lazy: loads torch and transformers

        return ZeroShotClassifier("minilm", ZERO_SHOT_DESCRIPTIONS)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"model not found: {path}. Train one with `verticals train finance/sentiment-full "
                        f"--out runs/finance-sentiment` and pass --model runs/finance-sentiment, or use "
                        f"--model zeroshot.")
    model = load_run(path, runtime)
    sentiment_columns(model.labels)
    return model


def model_version(spec: str, model, runtime: str = "torch") -> str:
    """What scored a document: the model's own `model_version` if it has one; `zeroshot`; else the
    run directory's name @ the first 12 hex of a sha256 over its model files (configs and weights,
    not exports), plus the runtime when it is not torch (int8 weights score differently)."""
    own = getattr(model, "model_version", None)
    if isinstance(own, str) and own:
        return own
    if spec == "zeroshot":
        return "zeroshot"
    try:
        directory = model_dir(spec)
    except UserError:  # a model handed in by a caller, not loaded from `spec`
        return Path(spec).name or "unknown"
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.suffix in (".json", ".safetensors") and p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with open(path, "rb") as handle:  # in chunks: weights can be hundreds of MB
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    name = directory.parent.name if directory.name == "model" else directory.name
    return f"{name}@{digest.hexdigest()[:12]}" + ("" if runtime == "torch" else f"/{runtime}")


def ingest_batch(store: Store, lines: list[Line], *, matcher: EntityMatcher, model, batch_size: int,
                 version: str | None = None, bad_tickers: str = "quarantine") -> dict:
    """Parse, de-duplicate, extract, score and commit one batch of lines from one source; a line
    that fails any step is quarantined with the reason, never the batch."""
    docs, quarantined, seen = [], [], set()
    for line in lines:
        if line.problem is None and not line.raw.strip():
            continue  # blank lines are not documents and not errors
        try:
            if line.problem is not None:
                raise Malformed(line.problem)
            doc = parse_document(line.raw, not_after=time.time() + MAX_FUTURE_SECONDS,
                                 known_tickers=frozenset(matcher.watchlist), bad_tickers=bad_tickers)
            entities = tuple(matcher.extract(doc.text, doc.tickers))
        except Malformed as exc:
            quarantined.append((line.start, line.raw, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - an unforeseen case: still this line's, not the batch's
            quarantined.append((line.start, line.raw, f"unreadable: {type(exc).__name__}: {exc}"))
            continue
        if doc.id not in seen:
            seen.add(doc.id)
            docs.append((line, doc, entities))
    known = store.known_ids([doc.id for _, doc, _ in docs])
    new = [d for d in docs if d[1].id not in known]
    records = []
    scored = score_documents(model, [doc for _, doc, _ in new], batch_size, matcher, [e for _, _, e in new])
    for (line, doc, entities), score in zip(new, scored):
        if isinstance(score, str):
            quarantined.append((line.start, line.raw, score))
            continue
        records.append(Record({"id": doc.id, "ts": doc.ts, "ts_text": doc.ts_text, "text": doc.text,
                               "source": doc.source, "origin": lines[0].source_key},
                              {"doc_id": doc.id, **score.document, "model": version}, entities, line.start, line.raw,
                              score.entities))
    refused = store.commit_batch(source_key=lines[0].source_key, offset=lines[-1].end, records=records,
                                 quarantined=quarantined)
    return {"lines": len(lines), "new": len(records) - refused, "seen": len(docs) - len(new),
            "quarantined": len(quarantined) + refused}


def refresh_aggregates(store: Store, rules: RuleSet) -> None:
    """Recompute every dirty entity's windows from its earliest dirty one (later EWMAs depend on it), then
    commit them all (`commit_aggregates`: one transaction on SQLite)."""
    updates = []
    for entity, since in store.dirty_from().items():
        ewma = store.last_ewma(entity, since)
        windows: list[WindowStats] = []
        for start, (scores, labels) in sorted(store.window_scores(entity, since).items()):
            windows.append(window_stats(entity, start, rules.window, scores, labels, ewma, rules.ewma_alpha))
            ewma = windows[-1].ewma
        updates.append((entity, since, windows))
    if updates:
        store.commit_aggregates(updates)


class ClosedWindows:
    """The on-time stats of an entity's closed windows, each read from the store once per run.

    A closed window's on-time documents never change (a document that arrives after its window closed
    is late), so the stats of the windows of a baseline can be kept and reused by the next evaluations
    instead of reading the whole trailing baseline again for every window evaluated (a 7-day baseline
    of 1-hour windows: 168 windows read per evaluation). Per entity: the stats of the windows in
    [first, last) read so far (an empty window has none); windows before the latest baseline are dropped.
    """

    def __init__(self, rules: RuleSet):
        self.rules = rules
        self._stats: dict[str, dict[int, WindowStats]] = {}
        self._read: dict[str, tuple[int, int]] = {}  # entity -> [first, last) window starts read

    def baseline_and_window(self, store, entity: str, start: int) -> dict[int, WindowStats]:
        """window start -> on-time stats of `entity`'s non-empty windows in [start - baseline, start];
        every one of them must be closed."""
        first = start - self.rules.baseline
        stats = self._stats.setdefault(entity, {})
        read_first, read_last = self._read.get(entity, (first, first))
        if first < read_first:  # an earlier window than ever asked for: read the range again
            stats.clear()
            read_last = first
        for s, (scores, labels) in store.window_scores(entity, max(first, read_last), start + 1, on_time=True).items():
            stats[s] = window_stats(entity, s, self.rules.window, scores, labels, None, self.rules.ewma_alpha)
        for s in [s for s in stats if s < first]:
            del stats[s]
        self._read[entity] = (first, max(read_last, start + 1))
        return {s: w for s, w in stats.items() if s <= start}


def raise_alerts(store: Store, rules: RuleSet, sink_specs: list[str], closed: ClosedWindows | None = None) -> list[int]:
    """Evaluate the rules once on every closed window not evaluated yet, with its on-time documents
    against the on-time documents of the trailing baseline (all in closed windows, so nothing here
    can change later, and `closed` keeps what it read for the next calls); commit the alerts in
    (window, entity, rule) order; returns the new ids."""
    closed = closed or ClosedWindows(rules)
    evaluated = store.closed_pending()
    alerts = []
    for entity, start in evaluated:
        stats = closed.baseline_and_window(store, entity, start)
        if start not in stats:
            continue
        history = [stats[s] for s in sorted(stats) if s < start]
        for finding in rules.evaluate(stats[start], history):
            alerts.append({"entity": entity, "rule": finding.rule, "window_start": start,
                           "window_end": start + rules.window, "value": finding.value, "baseline": finding.baseline,
                           "detail": finding.detail, "evidence": store.evidence(entity, start, finding.evidence)})
    alerts.sort(key=lambda a: (a["window_start"], a["entity"], a["rule"]))
    return store.commit_alerts(evaluated, alerts, sink_specs) if evaluated else []


def open_store(db, window: int, lateness: int = 0):
    """`postgresql://...` -> the shared PostgreSQL store (store_postgres.py, for several workers);
    anything else is a SQLite file (the default)."""
    if is_database_url(str(db)):
        return PostgresStore(str(db), window, lateness)
    return Store(Path(db), window, lateness)


def run_monitor(cfg: MonitorConfig, *, model=None, stop: Callable[[], bool] = lambda: False,
                log: Callable[[str], None] = lambda _: None) -> RunStats:
    rules = load_rules(cfg.rules, cfg.window)
    matcher = EntityMatcher(load_watchlist(cfg.watchlist))
    sinks = {spec: build_sink(spec) for spec in cfg.sinks}
    sources = [open_source(spec, cfg.follow, cfg.max_line_bytes) for spec in cfg.inputs]
    if sum(spec == "-" for spec in cfg.inputs) > 1:
        raise UserError("stdin ('-') can be given once")
    store = open_store(cfg.db, rules.window, rules.lateness)
    model = model if model is not None else load_scorer(cfg.model, cfg.runtime)
    version = model_version(cfg.model, model, cfg.runtime)
    backoff = Backoff(base=cfg.retry_base_seconds)
    stats, started = RunStats(), time.perf_counter()

    worker = DeliveryWorker(lambda: open_store(cfg.db, rules.window, rules.lateness), sinks, backoff,
                            min(0.5, cfg.poll_seconds)).start()  # deliveries off the reading loop (delivery.py)

    closed = ClosedWindows(rules)

    def catch_up() -> None:  # aggregates, then alerts of the windows that closed, then wake the deliveries
        refresh_aggregates(store, rules)
        stats.alerts += len(raise_alerts(store, rules, list(sinks), closed))
        worker.wake()

    try:
        catch_up()  # what a killed run left: dirty windows, closed windows not evaluated, deliveries
        while not stop():
            got = 0
            for source in sources:
                for batch in source.batches(store.offset, cfg.batch_size):
                    done = ingest_batch(store, batch, matcher=matcher, model=model, batch_size=cfg.batch_size,
                                        version=version, bad_tickers=cfg.bad_tickers)
                    source.acknowledge(batch)  # after the commit: a broker may now forget these messages
                    got += done["lines"]
                    stats.lines += done["lines"]
                    stats.new_documents += done["new"]
                    stats.already_seen += done["seen"]
                    stats.quarantined += done["quarantined"]
                    catch_up()
                    if stop():
                        break
            if not cfg.follow:  # one pass reads every source to its end
                break
            if got == 0:
                worker.wake()
                time.sleep(cfg.poll_seconds)
        if not cfg.follow and not stop():  # the input is complete: its last windows are closed too
            store.close_input()
            catch_up()
        stats.seconds = time.perf_counter() - started
        worker.stop()  # an attempt in flight finishes (bounded by its sink's timeout); then deliver and drain here
        deliver_due(store, sinks, backoff)
        _drain(store, sinks, backoff, 0 if cfg.follow else cfg.drain_seconds, log)
        stats.totals = store.counts() | {"quarantine_reasons": store.quarantine_reasons()}
    finally:
        worker.stop()
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
