"""Question: how near the hardware's ceiling does the support service route, and with which settings?

Protocol: a setting's ceiling is the batched routing throughput of the same runtime and threads in
one process, no HTTP (`IntentRouter.route_batch` on batches of 64 test texts from PARALLEL threads
at once; median of 3 passes); the machine's ceiling is the best of them.
Each setting then starts `verticals serve RUN` on loopback with the prediction log ON (an SQLite
file in a temporary folder; texts hashed, the default) and sends `--requests` single-text POST
/v1/route requests from `--concurrency` keep-alive clients (benchmarks.http_load, on the same
machine), cycling through the test texts; requests/s, errors, p50/p99 latency and the CPU of
server and generator are recorded. Settings are interleaved round by round (`--rounds`), medians
reported. The run: `verticals train support/intent-demo` with `verticals export onnx RUN --int8`
(the demo model; texts: its test split), or any support run given with --run.

    python -m benchmarks.support_service --run RUN [--settings onnx-int8:2:1,...] [--rounds 3]

A setting is RUNTIME:THREADS:PARALLEL: `verticals serve --runtime RUNTIME --threads THREADS
--parallel-batches PARALLEL` (ONNX Runtime intra-op threads per model call; model calls at once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import http_load
from benchmarks.record import write_record
from tests.http_helpers import free_port, start_cli_server

DEFAULT_SETTINGS = "onnx-int8:2:1"


def parse_setting(text: str) -> dict:
    runtime, threads, parallel = text.split(":")
    return {"runtime": runtime, "threads": int(threads), "parallel": int(parallel), "name": text}


def ceiling(run: Path, texts: list[str], runtime: str, threads: int, parallel: int, batch: int = 64) -> float:
    """Texts/s of the router's batched path in this process, no HTTP: `parallel` threads each
    routing its share of `texts` in batches of `batch` on one router; median of 3 passes."""
    from solutions.support.router import IntentRouter

    router = IntentRouter.from_run(run, runtime=runtime, threads=threads)
    router.route_batch(texts[:batch])
    shares = [texts[i::parallel] for i in range(parallel)]

    def route_share(share):
        for i in range(0, len(share), batch):
            router.route_batch(share[i:i + batch])

    rates = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(route_share, shares))
            rates.append(len(texts) / (time.perf_counter() - start))
    return statistics.median(rates)


def serve_once(run: Path, setting: dict, texts: list[str], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cli = ["serve", str(run), "--runtime", setting["runtime"], "--threads", str(setting["threads"]),
               "--log", str(Path(tmp) / "predictions.db")]
        if setting["parallel"] > 1:
            cli += ["--parallel-batches", str(setting["parallel"])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = start_cli_server(cli, port, env, Path(tmp) / "server.log")
        try:
            http_load.load_test(port, proc.pid, texts, requests=min(1000, args.requests),
                                concurrency=args.concurrency)  # warm-up: every worker's first batches
            load = os.getloadavg()[0]
            result = http_load.load_test(port, proc.pid, texts, requests=args.requests, concurrency=args.concurrency)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {**result, "load_average_before": load, "load_average_after": os.getloadavg()[0]}


def summarise(rows: list[dict], ceiling_tps: float) -> dict:
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("requests_per_second", "p50_ms", "p99_ms", "server_cpu_cores", "client_cpu_cores")}
    return {**med, "errors": sum(r["errors"] for r in rows), "rounds": len(rows),
            "share_of_ceiling": med["requests_per_second"] / ceiling_tps,
            "load_average_max": max(r["load_average_after"] for r in rows)}


def table(record: dict) -> str:
    best = max(s["ceiling_texts_per_second"] for s in record["settings"].values())
    lines = [f"Support service near its ceiling ({record['run_name']}, {record['concurrency']} keep-alive clients on "
             f"the same {os.cpu_count()} cores, {record['requests']} requests per round, prediction log on, medians "
             f"of {record['rounds']} interleaved rounds):", "",
             "| setting (runtime:threads:parallel) | ceiling texts/s | requests/s | share of ceiling | share of best ceiling | p50 ms | p99 ms "
             "| errors | server cores | generator cores | load avg (max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in record["settings"].items():
        lines.append(f"| {name} | {s['ceiling_texts_per_second']:.0f} | {s['requests_per_second']:.0f} | "
                     f"{s['share_of_ceiling']:.0%} | {s['requests_per_second'] / best:.0%} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} | "
                     f"{s['server_cpu_cores']:.2f} | {s['client_cpu_cores']:.2f} | {s['load_average_max']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a support run directory (with its ONNX export for onnx runtimes)")
    parser.add_argument("--data", default="demo_support", help="data set whose test texts are sent (catalog name)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated RUNTIME:THREADS:PARALLEL")
    parser.add_argument("--requests", type=int, default=12000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="support_service", help="record name (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv)
    from core.data.catalog import load_classification  # lazy: the package import pulls in torch

    texts = load_classification(args.data, root=args.data_dir).test.texts
    run = Path(args.run).resolve()
    settings = [parse_setting(s) for s in args.settings.split(",")]
    ceilings = {}
    for s in settings:
        key = (s["runtime"], s["threads"], s["parallel"])
        if key not in ceilings:
            ceilings[key] = ceiling(run, texts * max(1, 2048 // len(texts)), *key)
            print(f"ceiling {key}: {ceilings[key]:.0f} texts/s", flush=True)
    rows = {s["name"]: [] for s in settings}
    for round_ in range(args.rounds):
        for s in settings:
            row = serve_once(run, s, texts, args)
            rows[s["name"]].append(row)
            print(f"round {round_} {s['name']}: {row['requests_per_second']:.0f} req/s, p99 {row['p99_ms']:.1f} ms, "
                  f"errors {row['errors']}, load {row['load_average_after']:.1f}", flush=True)
    record = {"run": str(run), "run_name": run.name, "data": args.data, "concurrency": args.concurrency,
              "requests": args.requests, "rounds": args.rounds,
              "settings": {s["name"]: {**s, "ceiling_texts_per_second": ceilings[(s["runtime"], s["threads"], s["parallel"])],
                                       **summarise(rows[s["name"]], ceilings[(s["runtime"], s["threads"], s["parallel"])]),
                                       "per_round": rows[s["name"]]} for s in settings}}
    path = write_record(args.name, record, table(record))
    print(table(record))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
