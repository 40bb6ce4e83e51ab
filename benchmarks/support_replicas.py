"""Question: how many routes/s do 1 and 2 `verticals serve` replicas sustain with one shared
PostgreSQL prediction log, against one replica logging to SQLite, and what does a log write cost?

Protocol: a PostgreSQL 15 server (tests/servers.py, fsync and synchronous_commit on: durable
commits), a fresh schema per run. Each run starts N replicas (`verticals serve RUN --log URL|FILE`,
real processes, `--threads-per-replica` math threads each), then `--clients` concurrent HTTP clients
(asyncio + httpx, keep-alive) send one-text `POST /v1/route` requests round robin across the
replicas, texts drawn from a fixed list with a seeded RNG; a `--feedback-share` of the answers gets
a `POST /v1/feedback` sent to the replica that did NOT route it (the shared log must find it).
`--warmup` s unmeasured, then `--seconds` measured: routes/s = successful routes / seconds, latency
p50/p99 per route, errors (any non-200 or transport error). Log write cost: the replicas'
`verticals_prediction_log_write_seconds` histogram (one observation per micro-batch, the whole
transaction) read from /metrics before and after the window: mean seconds per batch and batches.
The baseline is one replica on the SQLite log (the default). The load average is recorded before
and after each run; the CPU is shared with whatever else runs, so compare runs of one record only.
`--repeats` runs of each configuration (texts reseeded per repeat) give mean ± std.

    python -m benchmarks.support_replicas --run runs/intents [--configs sqlite:1,postgresql:1,postgresql:2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.record import write_record
from tests.http_helpers import free_port, start_cli_server
from tests.servers import PostgresServer

TEXTS = ["my card was declined", "I lost my card yesterday", "how long does a transfer take",
         "my transfer is pending", "what is the exchange rate", "can I get a refund for this charge",
         "why was I charged a fee", "my top up failed", "how do I change my PIN", "the atm kept my card"]
WRITE = "verticals_prediction_log_write_seconds"


def log_writes(client: httpx.Client, url: str) -> tuple[float, float]:
    """(seconds, batches) the replica's prediction log writes took so far."""
    text = client.get(f"{url}/metrics").text
    found = [re.search(rf"^{WRITE}_{part} (\S+)$", text, re.MULTILINE) for part in ("sum", "count")]
    return tuple(float(m.group(1)) if m else 0.0 for m in found)


async def client_loop(urls: list[str], rng: np.random.Generator, until: float, measure_from: float,
                      feedback_share: float, out: dict, offset: int) -> None:
    n = offset
    async with httpx.AsyncClient(timeout=30) as client:
        while (now := time.perf_counter()) < until:
            text = TEXTS[int(rng.integers(len(TEXTS)))]
            started, n = time.perf_counter(), n + 1
            try:
                reply = await client.post(f"{urls[n % len(urls)]}/v1/route", json={"text": text})
                ok = reply.status_code == 200
            except httpx.HTTPError:
                ok = False
            if now >= measure_from:
                out["latency" if ok else "errors"].append(time.perf_counter() - started)
            if ok and rng.random() < feedback_share:
                fed = await client.post(f"{urls[(n + 1) % len(urls)]}/v1/feedback",  # the other replica
                                        json={"request_id": reply.json()["request_id"], "intent": "card_arrival",
                                              "text": text})
                out["feedback_ok" if fed.status_code == 200 else "feedback_errors"].append(1)


def run_once(args, backend: str, replicas: int, repeat: int, server, workdir: Path) -> dict:
    target = (server.schema_dsn(f"bench_{replicas}_{repeat}") if backend == "postgresql"
              else str(workdir / f"predictions-{replicas}-{repeat}.db"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads_per_replica),
           "MKL_NUM_THREADS": str(args.threads_per_replica)}
    ports = [free_port() for _ in range(replicas)]
    procs = [start_cli_server(["serve", args.run, "--log", target], port, env, workdir / f"replica-{port}.log")
             for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        load_before = os.getloadavg()
        out = {"latency": [], "errors": [], "feedback_ok": [], "feedback_errors": []}
        start = time.perf_counter()
        measure_from, until = start + args.warmup, start + args.warmup + args.seconds
        writes_before = None

        async def drive():
            nonlocal writes_before
            loops = [client_loop(urls, np.random.default_rng([args.seed, repeat, c]), until, measure_from,
                                 args.feedback_share, out, c) for c in range(args.clients)]
            tasks = [asyncio.ensure_future(loop) for loop in loops]
            await asyncio.sleep(args.warmup)
            with httpx.Client() as sync:
                writes_before = [log_writes(sync, url) for url in urls]
            await asyncio.gather(*tasks)

        asyncio.run(drive())
        with httpx.Client() as sync:
            writes_after = [log_writes(sync, url) for url in urls]
        seconds = sum(a[0] - b[0] for a, b in zip(writes_after, writes_before))
        batches = sum(a[1] - b[1] for a, b in zip(writes_after, writes_before))
        latency = np.array(out["latency"]) * 1000
        return {"backend": backend, "replicas": replicas, "repeat": repeat, "clients": args.clients,
                "routes_per_second": round(len(latency) / args.seconds, 1),
                "p50_ms": round(float(np.percentile(latency, 50)), 2) if len(latency) else None,
                "p99_ms": round(float(np.percentile(latency, 99)), 2) if len(latency) else None,
                "errors": len(out["errors"]), "feedback_ok": len(out["feedback_ok"]),
                "feedback_errors": len(out["feedback_errors"]), "log_batches": int(batches),
                "log_write_ms_per_batch": round(seconds / batches * 1000, 3) if batches else None,
                "load_average_before": load_before, "load_average_after": os.getloadavg()}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _spread(group: list[dict], key: str, digits: int = 1) -> str:
    """mean ± std of `key` over the repeats of one configuration."""
    values = [r[key] for r in group if r[key] is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def table(runs: list[dict], args) -> str:
    title = (f"`verticals serve` replicas, {args.clients} clients, {args.seconds:g} s measured after {args.warmup:g} s "
             f"warm-up, {args.threads_per_replica} math thread(s) per replica, {os.cpu_count()} CPUs shared with other "
             f"work; mean ± std of {args.repeats} repeat(s) (seed {args.seed}):")
    lines = [title, "",
             "| log | replicas | routes/s | p50 ms | p99 ms | log write ms / batch | errors | load avg after |",
             "|---|---|---|---|---|---|---|---|"]
    for backend, replicas in dict.fromkeys((r["backend"], r["replicas"]) for r in runs):
        group = [r for r in runs if (r["backend"], r["replicas"]) == (backend, replicas)]
        lines.append(f"| {backend} | {replicas} | {_spread(group, 'routes_per_second')} | {_spread(group, 'p50_ms')} | "
                     f"{_spread(group, 'p99_ms')} | {_spread(group, 'log_write_ms_per_batch', 3)} | "
                     f"{sum(r['errors'] for r in group)} | {max(r['load_average_after'][0] for r in group):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a support run directory to serve")
    parser.add_argument("--configs", default="sqlite:1,postgresql:1,postgresql:2",
                        help="backend:replicas, comma-separated (backend: sqlite or postgresql)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads-per-replica", type=int, default=1)
    parser.add_argument("--feedback-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only (a smoke run)")
    args = parser.parse_args(argv)
    configs = [(backend, int(n)) for backend, n in (spec.split(":") for spec in args.configs.split(","))]
    runs = []
    server = PostgresServer(fsync=True).start() if any(b == "postgresql" for b, _ in configs) else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(args.repeats):
                for backend, replicas in configs:
                    runs.append(run_once(args, backend, replicas, repeat, server, Path(tmp)))
                    print(json.dumps(runs[-1]), flush=True)
    finally:
        if server is not None:
            server.close()
    md = table(runs, args)
    print(md)
    if not args.no_record:
        write_record("support_replicas", {
            "question": "routes/s of 1 and 2 verticals serve replicas on a shared PostgreSQL prediction log, against "
                        "one on SQLite, and the cost of a log write", "protocol": __doc__, "config": vars(args),
            "seeds": [args.seed], "dataset": "fixed support queries (benchmarks.support_replicas.TEXTS)",
            "baseline": "one replica, SQLite log", "runs": runs}, md)


if __name__ == "__main__":
    main()
