"""Question: what does reading every sentence, per company, cost the monitor in documents/s and sentences/s,
beside scoring each document once (the monitor before per-company scores)?

Inputs: the demo stream (datasets/demo_finance_stream, short news items and posts) and constructed long
articles (10-40 Financial PhraseBank *test* sentences each, one invented company named in 3-8 of them, as in
benchmarks/finance_entities.py; a watchlist of those companies; one article a minute).
Systems, the same trained run, the same monitor loop (parse, store, aggregate, alert rules; no sinks):
- per document (before): each document scored once as one text (cut at the run's max_length, 64 tokens for
  the finance recipes) and that score given to every company in it; reproduced here by the scorer the
  monitor had (one `score_texts` call per batch), swapped in for solutions.finance.monitor.scoring;
- per sentence (now): solutions.finance.monitor.scoring, every sentence scored (up to the 400-sentence cap)
  and aggregated per company.
After one uncounted warm-up run of each, each (input, system) is run `--repeats` times, interleaved, each on a fresh database, in one process; the
median is reported. documents/s = input lines / the run's wall time; sentences/s = sentences scored / wall.
Target (issue 25): on the demo stream, per sentence >= 0.7x the per-document documents/s.

    python -m benchmarks.finance_throughput --run runs/finance-sentiment --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import verticals.registry  # noqa: F401 - installs the finance readers the catalog needs
from benchmarks.finance_entities import long_articles
from benchmarks.record import write_record
from core.data.catalog import builtin_datasets_dir, load_classification
from core.models.predictor import load_run, model_dir
from solutions.finance.monitor import loop
from solutions.finance.monitor.scoring import Scored
from solutions.finance.sentiment import score_texts

SYSTEMS = ("per document (before)", "per sentence (now)")


def per_document(model, docs, batch_size, matcher=None, entities=None) -> list:
    """The monitor's scorer before per-company scores: one score per document, given to all its companies."""
    sentiment = score_texts(model, [d.text for d in docs], batch_size=batch_size)
    out = []
    for i, found in enumerate(entities or [()] * len(docs)):
        row = {"p_negative": float(sentiment.negative[i]), "p_neutral": float(sentiment.neutral[i]),
               "p_positive": float(sentiment.positive[i]), "score": float(sentiment.score[i]),
               "label": sentiment.label[i], "sentences": 1, "sentences_dropped": 0, "evidence": "[]"}
        out.append(Scored(row, {e: row for e in found}))
    return out


def long_stream(directory: Path, data_dir: str | None, n: int) -> tuple[Path, Path]:
    """Long articles as a JSONL stream plus the watchlist of their companies."""
    data = load_classification("financial_phrasebank", root=data_dir)
    articles = long_articles(data.test.texts, data.test.labels, np.random.default_rng(0), n)
    watchlist, lines = {}, []
    for i, article in enumerate(articles):
        (company,) = article["gold"]
        watchlist[company.replace(" ", "").upper()] = [company]
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1772442000 + 60 * i))
        lines.append(json.dumps({"id": f"a{i}", "ts": ts, "text": article["text"], "source": "constructed"}))
    stream, names = directory / "long.jsonl", directory / "long-watchlist.yaml"
    stream.write_text("\n".join(lines) + "\n")
    names.write_text("".join(f"{ticker}: {json.dumps(name)}\n" for ticker, name in watchlist.items()))
    return stream, names


def run_once(model, stream: Path, watchlist: Path, system: str, directory: Path) -> dict:
    db = Path(tempfile.mkdtemp(dir=directory)) / "monitor.db"
    cfg = loop.MonitorConfig(inputs=(str(stream),), db=db, model="unused", watchlist=watchlist, sinks=(),
                             drain_seconds=0)
    original = loop.score_documents
    loop.score_documents = per_document if system == SYSTEMS[0] else original
    try:
        stats = loop.run_monitor(cfg, model=model)
    finally:
        loop.score_documents = original
    with sqlite3.connect(db) as conn:
        sentences, mentions = conn.execute("SELECT SUM(sentences), (SELECT COUNT(*) FROM mentions) FROM scores").fetchone()
    return {"lines": stats.lines, "seconds": stats.seconds, "sentences": sentences, "mentions": mentions,
            "documents_per_second": stats.lines / stats.seconds, "sentences_per_second": sentences / stats.seconds}


def table(results: dict, load: tuple) -> str:
    lines = [f"One process, 2 CPU cores, median of the repeats; load average {load[0]:.2f} at the end.", "",
             "| input | system | documents | sentences scored | documents/s | sentences/s | vs per document |",
             "|---|---|---|---|---|---|---|"]
    for name, systems in results.items():
        base = statistics.median(r["documents_per_second"] for r in systems[SYSTEMS[0]])
        for system, runs in systems.items():
            dps = statistics.median(r["documents_per_second"] for r in runs)
            sps = statistics.median(r["sentences_per_second"] for r in runs)
            lines.append(f"| {name} | {system} | {runs[0]['lines']} | {runs[0]['sentences']} | {dps:.1f} | "
                         f"{sps:.1f} | {dps / base:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finance sentiment run directory")
    parser.add_argument("--data-dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--articles", type=int, default=100)
    args = parser.parse_args(argv)
    model = load_run(model_dir(Path(args.run)), "torch")
    demo = builtin_datasets_dir() / "demo_finance_stream"
    started, load_start = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {"demo stream": (demo / "stream.jsonl", demo / "watchlist.yaml"),
                  "long articles": long_stream(Path(tmp), args.data_dir, args.articles)}
        results = {name: {s: [] for s in SYSTEMS} for name in inputs}
        for name, (stream, watchlist) in inputs.items():
            for system in SYSTEMS:  # a warm-up run of each, not counted (first calls allocate and compile)
                run_once(model, stream, watchlist, system, Path(tmp))
            for repeat in range(args.repeats):
                for system in SYSTEMS:
                    got = run_once(model, stream, watchlist, system, Path(tmp))
                    results[name][system].append(got)
                    print(f"{name} | {system} | repeat {repeat}: {got['documents_per_second']:.1f} docs/s, "
                          f"{got['sentences_per_second']:.1f} sentences/s", flush=True)
    load = os.getloadavg()
    md = table(results, load)
    write_record("finance_throughput", {"question": __doc__.split("\n\n")[0], "protocol": __doc__,
                                        "run": Path(args.run).name, "results": results,
                                        "wall_seconds": round(time.time() - started, 1),
                                        "load_average_start": load_start, "load_average_end": load}, md)
    print(md)


if __name__ == "__main__":
    main()
