"""FAISS index types on synthetic clustered 384-d unit vectors: what each costs and how exact it is.

Question: which index type to serve item embeddings with on a 2-core CPU, and what our wrapper
(solutions.recsys.index.ItemIndex: string ids, exclusions, read/write lock) costs on top of raw
FAISS. Data: `n` vectors from 1,000 Gaussian clusters on the unit sphere (centre + noise of the
same norm, normalised: the cosine to the own centre is about 0.7), queries drawn the same way
(seed 0). Exact ground truth from IndexFlatIP. Reported per index: build seconds (train + add),
serialized index size, batched queries/s (all queries in one call, k=10, after a warm-up),
single queries/s (one call per query), recall@10 against exact search, and the wrapper's
batched and single-query speed relative to raw FAISS searching the very same index object
(interleaved, best of 3). HNSW at 1M is skipped when the 100k build time predicts over 10 min.

    python -m benchmarks.faiss_index [--sizes 100000,1000000] [--queries 10000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.record import write_record
from core.foundation.cost import CostLedger
from solutions.recsys.index import ItemIndex

DIM, K = 384, 10
INDEXES = {"Flat": {}, "HNSW32": {"ef_search": 64}, "IVF1024,PQ48": {"nprobe": 16}}
TRAIN_SAMPLE = 30_000  # IVF/PQ training vectors (about 30 per list for IVF1024)
HNSW_BUILD_LIMIT_S = 600
EF_SWEEP = (128, 256, 512)  # extra efSearch values measured on the same HNSW graph (recall vs speed)


def clustered_unit_vectors(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        noise = rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM)
        x = centres[rng.integers(0, len(centres), m)] + noise
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = K) -> float:
    """Mean over queries of |found top-k ∩ exact top-k| / k (labels are row numbers)."""
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)]))


def batched_qps(search, queries: np.ndarray) -> float:
    search(queries[:100])  # warm-up
    start = time.perf_counter()
    search(queries)
    return len(queries) / (time.perf_counter() - start)


def single_qps(search, queries: np.ndarray, budget_s: float = 3.0) -> float:
    search(queries[:1])
    start, n = time.perf_counter(), 0
    while n < len(queries) and time.perf_counter() - start < budget_s:
        search(queries[n:n + 1])
        n += 1
    return n / (time.perf_counter() - start)


def raw_faiss_index(wrapper: ItemIndex):
    """The FAISS index the wrapper holds, unwrapped from its IndexIDMap2 where it has one."""
    import faiss

    return faiss.downcast_index(wrapper.index.index) if isinstance(wrapper.index, faiss.IndexIDMap2) else wrapper.index


def build(factory: str, options: dict, data: np.ndarray) -> tuple[ItemIndex, object]:
    ids = [str(i) for i in range(len(data))]
    with CostLedger() as ledger:
        index = ItemIndex(DIM, factory, **options)
        if not index.index.is_trained:
            index.train(data[np.random.default_rng(1).choice(len(data), min(len(data), TRAIN_SAMPLE), replace=False)])
        index.add(ids, data)
    return index, ledger.cost


def measure(index: ItemIndex, cost, options: dict, data: np.ndarray, queries: np.ndarray, exact: np.ndarray) -> dict:
    import faiss

    factory = index.factory
    raw = raw_faiss_index(index)
    raw_labels = raw.search(queries, K)[1]
    wrapper_ids = index.search(queries, K).ids
    wrapper_labels = np.vectorize(lambda v: int(v) if v is not None else -1)(wrapper_ids)
    rows = {"raw_batched": [], "wrapper_batched": [], "raw_single": [], "wrapper_single": []}
    single_q = queries[:2000]
    for _ in range(3):  # interleaved, so CPU contention hits both alike; best of 3
        rows["raw_batched"].append(batched_qps(lambda q: raw.search(q, K), queries))
        rows["wrapper_batched"].append(batched_qps(lambda q: index.search(q, K), queries))
        rows["raw_single"].append(single_qps(lambda q: raw.search(q, K), single_q))
        rows["wrapper_single"].append(single_qps(lambda q: index.search(q, K), single_q))
    best = {key: max(vals) for key, vals in rows.items()}
    return {"index": factory, "options": options, "n": len(data), "build_seconds": cost.wall_seconds,
            "build_cpu_seconds": cost.cpu_seconds, "peak_rss_mb": cost.peak_rss_mb,
            "index_mb": round(faiss.serialize_index(index.index).nbytes / 2**20, 1),
            "recall_at_10": round(recall_at_k(raw_labels, exact), 4),
            "wrapper_recall_at_10": round(recall_at_k(wrapper_labels, exact), 4),
            "batched_qps": round(best["raw_batched"]), "single_qps": round(best["raw_single"]),
            "wrapper_batched_qps": round(best["wrapper_batched"]), "wrapper_single_qps": round(best["wrapper_single"]),
            "wrapper_batched_overhead": round(1 - best["wrapper_batched"] / best["raw_batched"], 4),
            "wrapper_single_overhead": round(1 - best["wrapper_single"] / best["raw_single"], 4),
            "all_runs_qps": {key: [round(v) for v in vals] for key, vals in rows.items()}}


def table(rows: list[dict]) -> str:
    lines = ["| n | index | build s | index MB | recall@10 vs exact | batched q/s | single q/s | "
             "wrapper batched q/s (overhead) | wrapper single q/s (overhead) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['n']:,} | {r['index']} | skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(f"| {r['n']:,} | {r['index']} {r['options'] or ''} | {r['build_seconds']:.1f} | "
                     f"{r['index_mb']} | {r['recall_at_10']:.3f} | {r['batched_qps']:,} | {r['single_qps']:,} | "
                     f"{r['wrapper_batched_qps']:,} ({100 * r['wrapper_batched_overhead']:+.1f}%) | "
                     f"{r['wrapper_single_qps']:,} ({100 * r['wrapper_single_overhead']:+.1f}%) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--indexes", default=",".join(INDEXES), help="a subset of " + ", ".join(INDEXES))
    parser.add_argument("--merge", action="store_true",
                        help="keep rows of the record on disk that this run does not measure again")
    args = parser.parse_args(argv)
    import faiss

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((1000, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries_all = clustered_unit_vectors(args.queries, rng, centres)
    rows, hnsw_build_100k = [], None
    for n in [int(s) for s in args.sizes.split(",")]:
        data = clustered_unit_vectors(n, np.random.default_rng(args.seed + n), centres)
        queries = queries_all if n <= 100_000 else queries_all[:1000]  # exact search at 1M is slow
        flat = faiss.IndexFlatIP(DIM)
        flat.add(data)
        exact = flat.search(queries, K)[1]
        del flat
        for factory, options in [(f, INDEXES[f]) for f in args.indexes.split(",")]:
            if factory.startswith("HNSW") and hnsw_build_100k and n > 100_000:
                predicted = hnsw_build_100k * (n / 100_000) * 1.2
                if predicted > HNSW_BUILD_LIMIT_S:
                    rows.append({"index": factory, "n": n, "skipped": f"build predicted {predicted:.0f} s "
                                 f"(> {HNSW_BUILD_LIMIT_S} s) from the 100k build"})
                    print(rows[-1], flush=True)
                    continue
            print(f"[{time.strftime('%H:%M:%S')}] n={n:,} {factory}", flush=True)
            index, cost = build(factory, options, data)
            sweep = [options] + ([{"ef_search": ef} for ef in EF_SWEEP] if factory.startswith("HNSW") else [])
            for opts in sweep:  # the same graph searched with a wider beam: recall bought with speed
                if "ef_search" in opts:
                    index.set_search_params(ef_search=opts["ef_search"])
                row = measure(index, cost, opts, data, queries, exact)
                row["queries"] = len(queries)
                rows.append(row)
                print({k: v for k, v in row.items() if k != "all_runs_qps"}, flush=True)
            if factory.startswith("HNSW") and n == 100_000:
                hnsw_build_100k = cost.wall_seconds
            del index
        del data
        save(rows, args)  # after every size, so a long 1M run still leaves the 100k results
    print(table(rows))


def save(rows: list[dict], args) -> None:
    import json

    import faiss

    from benchmarks.record import RESULTS

    previous = RESULTS / "faiss_index.json"
    if args.merge and previous.is_file():
        def key(r):
            return r["n"], r["index"], json.dumps(r.get("options", {}), sort_keys=True)
        fresh = {key(r) for r in rows}
        kept = [r for r in json.loads(previous.read_text())["results"] if key(r) not in fresh]
        rows = sorted(kept + rows, key=lambda r: (r["n"], list(INDEXES).index(r["index"]) if r["index"] in INDEXES else 9,
                                                  r.get("options", {}).get("ef_search", 0)))

    load = [round(x, 2) for x in os.getloadavg()]
    md = (f"{os.cpu_count()} CPU cores, {faiss.omp_get_max_threads()} FAISS threads; load average (1/5/15 min) at the "
          f"end of the run {load[0]}/{load[1]}/{load[2]}: above {os.cpu_count()} means other jobs shared the cores, "
          f"so q/s are lower bounds. {args.queries:,} queries, k=10.\n\n" + table(rows))
    write_record("faiss_index", {
        "protocol": "synthetic: 1,000 Gaussian clusters of 384-d unit vectors (noise norm ~ centre norm), "
                    "queries from the same distribution; exact ground truth from IndexFlatIP; k=10; "
                    "batched = all queries in one call after warm-up; single = one query per call for up to 3 s; "
                    "raw and wrapper search the same FAISS object, interleaved, best of 3",
        "seed": args.seed, "faiss_version": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(),
        "queries": args.queries, "load_average_1_5_15min": load,
        "note": "load average > cpus means other jobs shared the cores while this ran: q/s are lower bounds",
        "results": rows}, md)


if __name__ == "__main__":
    main()
