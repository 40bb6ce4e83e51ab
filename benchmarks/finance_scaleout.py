"""Question: how many documents/s do 1 and 2 monitor workers sustain on Redis Streams + PostgreSQL
here, and what share of the cost is the broker's and the database's?

Protocol: one generated 30-day stream (benchmarks.finance_monitor.generate, seed 0: 1831 documents,
20 tickers) published to a fresh Redis stream (AOF, appendfsync always) while N workers
(`verticals finance monitor redis://... --db postgresql://...`, real processes, batch 64) wait on
it with their model loaded; throughput = documents / seconds from the first XADD until every
document is stored. PostgreSQL 15 with fsync and synchronous_commit on (durable commits), one
fresh database per run. Scorers: MiniLM (`--model zeroshot`: the all-MiniLM-L6-v2 encoder, the
same encoder cost per document as the fine-tuned MiniLM) and a null scorer (constant
probabilities, no model) that shows what the broker + database path alone sustains. Runs are
scorer x workers x torch threads per worker (default: MiniLM 1x1, 2x1, 1x2; null 1x1, 2x1). Shares: seconds the workers spent inside Redis calls (claims, frontier,
acks; reads apart, as they include waiting on an empty stream), inside PostgreSQL store calls and
scoring, over the window's worker-seconds (measured in the worker by wrapping those calls, between
two signals the driver sends at the window's start and end); and the CPU-seconds of redis-server and
of every PostgreSQL process over the window, beside the workers'.

    python -m benchmarks.finance_scaleout [--runs minilm:1:1,minilm:2:1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import wraps
from pathlib import Path

import numpy as np

from benchmarks.record import write_record

REPO = Path(__file__).resolve().parent.parent
STORE_METHODS = ("known_ids", "commit_batch", "close_input", "dirty_from", "window_scores", "aggregates", "last_ewma",
                 "evidence", "commit_windows", "closed_pending", "commit_alerts", "alert", "due_deliveries",
                 "pending_deliveries", "mark_delivered", "mark_failed", "defer_deliveries", "offset")


class NullScorer:
    """No model: every text neutral. Measures the monitor without the scoring cost."""

    labels = ["negative", "neutral", "positive"]

    def predict_proba(self, texts, batch_size=64):
        return np.tile([0.1, 0.8, 0.1], (len(texts), 1))


def _timed(owner, name: str, totals: dict, key: str) -> None:
    original = getattr(owner, name)

    @wraps(original)
    def run(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started
    setattr(owner, name, run)


def worker(argv: list[str]) -> None:
    """One monitor worker with its Redis, PostgreSQL and scoring time measured; writes them on SIGTERM."""
    source, dsn, watchlist, scorer, out = argv
    from solutions.finance.monitor import loop
    from solutions.finance.monitor.loop import MonitorConfig, run_monitor
    from solutions.finance.monitor.redis_source import RedisStreamSource
    from solutions.finance.monitor.store_postgres import PostgresStore

    totals = {"redis": 0.0, "redis_read": 0.0, "database": 0.0, "scoring": 0.0}
    call = RedisStreamSource._call

    def timed_call(self, fn, *args, **kwargs):  # a read blocks while the stream is empty: counted apart
        started = time.perf_counter()
        try:
            return call(self, fn, *args, **kwargs)
        finally:
            totals["redis_read" if fn.__name__ == "_read_new" else "redis"] += time.perf_counter() - started
    RedisStreamSource._call = timed_call
    for name in STORE_METHODS:
        _timed(PostgresStore, name, totals, "database")
    _timed(loop, "score_documents", totals, "scoring")
    model = NullScorer() if scorer == "null" else loop.load_scorer("zeroshot")
    stopping, snapshots = [], []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: snapshots.append(dict(totals)))  # the window's start and end
    cfg = MonitorConfig(inputs=(source,), db=dsn, model="zeroshot", watchlist=Path(watchlist), sinks=(),
                        follow=True, batch_size=64, poll_seconds=0.05, drain_seconds=0)
    Path(out + ".ready").write_text("")
    started = time.perf_counter()
    stats = run_monitor(cfg, model=model, stop=lambda: bool(stopping))
    start, end = snapshots[0], snapshots[-1]
    Path(out).write_text(json.dumps({**{k: end[k] - start[k] for k in totals}, "wall": time.perf_counter() - started,
                                     "lines": stats.lines}))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(postmaster: int) -> float:
    total = _cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    total += _cpu_seconds(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return total


def run_once(workers: int, scorer: str, threads: int, docs: list[dict], redis_server, postgres_server,
             workdir: Path) -> dict:
    import psycopg

    name = f"bench_{scorer}_{workers}x{threads}"
    dsn, client = postgres_server.create_database(name), redis_server.client()
    client.delete(name)
    source = f"{redis_server.url}/{name}?group=monitor&block=100&min_idle=60000"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    outs = [workdir / f"{name}-{i}.json" for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.finance_scaleout", "--worker", source, dsn,
                               str(workdir / "watchlist.yaml"), scorer, str(out)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for out in outs]
    while not all(Path(str(o) + ".ready").exists() for o in outs):
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-3000:])
        time.sleep(0.1)
    time.sleep(1.0)  # every worker is in its first empty read
    postmaster = int((postgres_server.dir / "data" / "postmaster.pid").read_text().split()[0])
    cpu0 = {"redis": _cpu_seconds(redis_server.proc.pid), "postgres": _postgres_cpu(postmaster),
            "workers": sum(_cpu_seconds(p.pid) for p in procs)}
    for proc in procs:
        proc.send_signal(signal.SIGUSR1)
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for doc in docs:
        pipe.xadd(name, {"doc": json.dumps(doc)})
    pipe.execute()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] < len(docs):
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        size = conn.execute("SELECT pg_database_size(current_database()) - pg_database_size('template1')").fetchone()[0]
    cpu = {"redis": _cpu_seconds(redis_server.proc.pid) - cpu0["redis"],
           "postgres": _postgres_cpu(postmaster) - cpu0["postgres"],
           "workers": sum(_cpu_seconds(p.pid) for p in procs) - cpu0["workers"]}
    loadavg = os.getloadavg()
    for proc in procs:
        proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        if proc.wait(timeout=120):
            raise RuntimeError(proc.stderr.read().decode()[-3000:])
    parts = [json.loads(o.read_text()) for o in outs]
    busy = seconds * workers  # worker-seconds of the measured window
    share = {k: round(sum(p[k] for p in parts) / busy, 4) for k in ("redis", "redis_read", "database", "scoring")}
    return {"workers": workers, "scorer": scorer, "torch_threads_per_worker": threads, "documents": len(docs),
            "seconds": round(seconds, 2), "documents_per_second": round(len(docs) / seconds, 1),
            "share_of_worker_time": share, "lines_per_worker": [p["lines"] for p in parts],
            "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
            "database_bytes_per_document": round(size / len(docs)),
            "cpu_share": {k: round(v / sum(cpu.values()), 4) for k, v in cpu.items()},
            "load_average_at_end": [round(x, 2) for x in loadavg]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="minilm:1:1,minilm:2:1,minilm:1:2,null:1:1,null:2:1",
                        help="scorer:workers:torch threads per worker, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import yaml

    from benchmarks.finance_monitor import generate
    from tests.servers import PostgresServer, RedisServer

    docs, _events, wl = generate(args.seed)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "watchlist.yaml").write_text(yaml.safe_dump(wl))
        redis_server, postgres_server = RedisServer().start(), PostgresServer(fsync=True).start()
        try:
            for spec in args.runs.split(","):
                scorer, workers, threads = spec.split(":")
                runs.append(run_once(int(workers), scorer, int(threads), docs, redis_server, postgres_server, workdir))
                print(json.dumps(runs[-1]), flush=True)
        finally:
            redis_server.close()
            postgres_server.close()
    lines = [f"Redis Streams + PostgreSQL 15, {len(docs)} documents (seed {args.seed}), {os.cpu_count()} CPUs shared "
             f"with other work (load average {load_before[0]:.2f} before, listed per run at its end):", "",
             "| scorer | workers x torch threads | documents/s | worker time in Redis / PostgreSQL / scoring | CPU-s workers / "
             "redis-server / postgres | load avg |", "|---|---|---|---|---|---|"]
    for r in runs:
        s, c = r["share_of_worker_time"], r["cpu_seconds"]
        lines.append(f"| {r['scorer']} | {r['workers']} x {r['torch_threads_per_worker']} | {r['documents_per_second']} | {s['redis']:.1%} / "
                     f"{s['database']:.1%} / {s['scoring']:.1%} | {c['workers']} / {c['redis']} / {c['postgres']} | "
                     f"{r['load_average_at_end'][0]} |")
    write_record("finance_scaleout", {"question": "documents/s of 1 and 2 monitor workers on Redis + PostgreSQL, and "
                                                  "the broker's and the database's share", "protocol": __doc__,
                                      "config": vars(args), "seed": args.seed, "dataset": "generated "
                                      "(benchmarks.finance_monitor.generate)", "load_average_before": load_before,
                                      "runs": runs}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2:])
    else:
        main()
