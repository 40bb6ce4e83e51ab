"""MovieLens (ml-latest-small): every recommender side by side, strong baselines included, and
whether new items can be recommended on day one.

Protocol (solutions.recsys.protocol): per user, the latest 20% of interactions (ordered by time,
ties in file order) are the test window; positives = rating >= 3.5; full ranking over all 9,742
movies with the user's training items excluded; users with a test positive and a training
positive are evaluated. Item text = title (year), genres, the 3 most common user tags.
Hyper-parameters are chosen on the validation cut only (the same temporal cut applied to the
training histories; baselines.choose_on_validation, content.choose_alpha, blend.choose_blend, the
sequential model's early stopping), once, with seed 0; the test windows are read once per fit.

Cold start: 10% of the movies that are relevant in some test window (seed 0) are held out: every
training interaction with them is removed, for every model, and only they count as relevant.
Each system is refitted on that split with the settings chosen above (first seed only). The one
fine-tuned encoder is trained on the cold-start split's validation-training part (held-out movies
and every user's validation and test windows never seen) and used in both tables.

Cost: fit CPU seconds and peak RSS from core.foundation.cost.CostLedger around `fit` (plus, for systems that
read item text, the catalog embedding / encoder fine-tuning they need: shown apart in the JSON);
the tuning search is recorded apart. Serving latency per user: one history scored and its top 10
ranked (median over 50 users); for systems with a user vector and item vectors, also a FAISS flat
inner-product search for the top 10 (the index-served path). Randomised systems (ALS, BPR, the
sequential model) run with seeds 0, 1, 2: mean ± std.

Systems: most-popular, item-kNN (cosine, 100 neighbours), EASE, implicit ALS, implicit BPR,
content with pretrained MiniLM, content with MiniLM fine-tuned on co-consumption pairs (one seed:
the fine-tune is the expensive part), hybrid (item-kNN + fine-tuned content), the sequential
model (solutions.recsys.sequential, over the pretrained text vectors) and the cold-start blend
(solutions.recsys.blend: EASE + fine-tuned content); each is defined in benchmarks/recsys_systems.py.

    python -m benchmarks.recsys_movielens --data-dir ../shared/datasets [--systems ease,als,bpr]
    python -m benchmarks.recsys_movielens --quick      # demo_catalog smoke run
Only a run of every system on MovieLens writes benchmarks/results/ (JSON, markdown, plot)
and the README table; a subset (--systems) or --quick writes the same files under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks.record import RESULTS, write_record
from benchmarks.recsys_cold import cold_policy_rows, cold_policy_table, set_view
from benchmarks.recsys_served import served_metrics
from benchmarks.recsys_systems import HALF_LIVES, SYSTEMS, Context, System, evaluate
from core.foundation.cost import CostLedger
from core.foundation.device import seed_everything
from core.foundation.plots import pyplot
from core.foundation.quiet import quiet_libraries
from core.runs.rundir import environment
from solutions.recsys.baselines import EASE
from solutions.recsys.data import load_interactions
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.factors_index import factor_view
from solutions.recsys.finetune import FinetuneConfig
from solutions.recsys.protocol import RankingSplit, cold_start_split, pick_cold_items, rank_items, split_dataset
from solutions.recsys.recipe_config import ItemEncoderModel

SEEDS = (0, 1, 2)
METRICS = ("ndcg@10", "recall@10", "recall@20", "mrr", "coverage@10")
LATENCY_USERS = 50


def serving_latency(model, spec: System, split: RankingSplit) -> dict:
    """Median / p95 ms per user: score one history and rank its top 10; and, with vectors, a FAISS search."""
    users = split.eval_users()[:LATENCY_USERS]
    index = split.item_index
    rank_ms = []
    for u in users:
        start = time.perf_counter()
        rank_items(model.score([split.history(u)]), split.items, [split.seen(u)], 10, index)
        rank_ms.append(1000 * (time.perf_counter() - start))
    out = {"score_rank_ms_p50": float(np.median(rank_ms)), "score_rank_ms_p95": float(np.percentile(rank_ms, 95))}
    if spec.vectors is not None:
        user_vectors, item_vectors = spec.vectors(model)
        flat = faiss.IndexFlatIP(item_vectors.shape[1])
        flat.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
        search_ms = []
        for u in users:
            start = time.perf_counter()
            query = np.ascontiguousarray(user_vectors([split.history(u)]), dtype=np.float32)
            _, rows = flat.search(query, 10 + len(split.seen(u)))
            [split.items[r] for r in rows[0] if r >= 0 and split.items[r] not in split.seen(u)][:10]  # the serving filter
            search_ms.append(1000 * (time.perf_counter() - start))
        out["index_search_ms_p50"] = float(np.median(search_ms))
    return out


def run_system(key: str, spec: System, ctx: Context) -> tuple[dict, dict]:
    with CostLedger() as tune_cost:
        params, searched = spec.tune(ctx)
    text_cost, text_config = {}, {}
    if spec.text:
        _, _, text_cost, text_config = ctx.vectors(spec.text)
    runs, served = [], None
    for seed in (SEEDS if spec.seeds else (SEEDS[0],)):
        model = spec.build(ctx, params, seed)
        with CostLedger() as ledger:
            model.fit(ctx.split)
        if seed == SEEDS[0]:
            served = served_metrics(key, model, ctx)
        cost = ledger.cost.to_dict()
        cost["fit_cpu_seconds_with_text"] = cost["cpu_seconds"] + text_cost.get("cpu_seconds", 0.0)
        runs.append({"seed": seed, "metrics": evaluate(model, ctx.split), "cost": cost})
        ctx.log(f"{key} seed {seed}: ndcg@10 {runs[-1]['metrics']['ndcg@10']:.4f}, fit {cost['cpu_seconds']:.1f} CPU s")
    latency = serving_latency(model, spec, ctx.split)
    cold_model = spec.build(ctx, params, SEEDS[0]).fit(ctx.cold)
    cold = {"key": key, "system": spec.title, "seed": SEEDS[0], "metrics": evaluate(cold_model, ctx.cold)}
    ctx.log(f"cold {key}: recall@20 {cold['metrics']['recall@20']:.4f}")
    summary = {}
    for name in (*METRICS, "fit_cpu_seconds_with_text", "peak_rss_mb"):
        values = [r["metrics"][name] if name in r["metrics"] else r["cost"][name] for r in runs]
        summary[name] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    row = {"key": key, "system": spec.title, "seeds": [r["seed"] for r in runs], "chosen_on_validation": params,
           "searched_on_validation": _jsonable(searched), "tuning_cost": tune_cost.cost.to_dict(),
           "text": spec.text, "text_cost": text_cost, "text_config": _jsonable(text_config), "runs": runs,
           "summary": summary, "latency": latency, "served": served}
    return row, cold


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _cell(stat: dict, digits: int = 4) -> str:
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["std"] else "")


def table(rows: list[dict], cold_rows: list[dict], users: int, cold_items: int, load: str) -> str:
    lines = [f"Full ranking, {users} users, temporal leave-latest-20%-out, positives = rating >= 3.5; "
             f"settings chosen on the validation cut; ± = std over seeds {', '.join(map(str, SEEDS))} where "
             f"randomness matters. Load average during the run: {load}.", "",
             "| system | seeds | NDCG@10 | Recall@10 | Recall@20 | MRR | coverage@10 | fit CPU s | peak RSS MB | "
             "ms/user (score+rank) | served NDCG@10 (HTTP, seed 0) | served ms p50 / p99 (errors) | "
             "chosen on validation |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, lat = r["summary"], r["latency"]
        chosen = ", ".join(f"{k}={v}" for k, v in r["chosen_on_validation"].items()) or "-"
        served = r.get("served")
        offline0 = r["runs"][0]["metrics"]["ndcg@10"]
        served_ndcg = (f"{served['metrics']['ndcg@10']:.4f} (offline {offline0:.4f})" if served else "not served")
        served_ms = (f"{served['latency_ms_p50']:.1f} / {served['latency_ms_p99']:.1f} ({served['errors']})"
                     if served else "-")
        lines.append(f"| {r['system']} | {len(r['seeds'])} | {_cell(s['ndcg@10'])} | {_cell(s['recall@10'])} | "
                     f"{_cell(s['recall@20'])} | {_cell(s['mrr'])} | {_cell(s['coverage@10'])} | "
                     f"{_cell(s['fit_cpu_seconds_with_text'], 1)} | {s['peak_rss_mb']['mean']:.0f} | "
                     f"{lat['score_rank_ms_p50']:.2f} | {served_ndcg} | {served_ms} | {chosen} |")
    lines += ["", "fit CPU s includes the catalog embedding (and encoder fine-tuning) for systems that read item text.",
              "", f"Cold start: {cold_items} held-out movies (no training interactions for any model); only they "
                  "count as relevant; seed 0.", "",
              "| system | Recall@20 (cold items) | NDCG@10 (cold items) | users |", "|---|---|---|---|"]
    for r in cold_rows:
        m = r["metrics"]
        lines.append(f"| {r['system']} | {m['recall@20']:.4f} | {m['ndcg@10']:.4f} | {m['users']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """NDCG@10 against fit CPU seconds (log x), one point per system, error bars over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        x, y = r["summary"]["fit_cpu_seconds_with_text"], r["summary"]["ndcg@10"]
        ax.errorbar(max(x["mean"], 1e-2), y["mean"], xerr=x["std"], yerr=y["std"], fmt="o", capsize=3)
        ax.annotate(r["key"], (max(x["mean"], 1e-2), y["mean"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("fit CPU seconds (log; text systems include embedding / fine-tuning)")
    ax.set_ylabel("NDCG@10 (mean ± std over seeds)")
    ax.set_title("MovieLens ml-latest-small: quality vs training cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cold_policies(rows: list[dict], ctx: Context) -> list[dict]:
    """The cold-item map and exposure policy (benchmarks/recsys_cold.py) over tuned ALS and our set model."""
    chosen = {r["key"]: r["chosen_on_validation"] for r in rows}
    out = []
    if "als" in chosen:
        out += cold_policy_rows("ALS (implicit, tuned)", lambda: ALS(**chosen["als"], seed=SEEDS[0]), factor_view, ctx)
    if "set" in chosen:
        out += cold_policy_rows("set autoencoder (ours)", lambda: SYSTEMS["set"].build(ctx, {}, SEEDS[0]), set_view, ctx)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="movielens_latest_small")
    parser.add_argument("--systems", help="comma-separated keys (default: all): " + ",".join(SYSTEMS))
    parser.add_argument("--quick", action="store_true", help="smoke run: demo_catalog, 2 fine-tune steps, tiny "
                                                             "backbone, records under --out instead of results/")
    defaults = FinetuneConfig()  # the item-encoder recipe's settings, but for the step count
    parser.add_argument("--backbone", default=ItemEncoderModel().backbone)
    parser.add_argument("--steps", type=int, default=40, help="fine-tuning steps (default 40, which keeps the "
                                                              f"benchmark to minutes; the recipe's cap is {defaults.steps})")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--min-support", type=int, default=defaults.min_support,
                        help="keep pairs shared by this many users")
    parser.add_argument("--out", default="benchmarks/runs/recsys-movielens")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.steps, args.backbone = "demo_catalog", 2, "tiny"
    chosen = args.systems.split(",") if args.systems else list(SYSTEMS)
    unknown = [k for k in chosen if k not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; available: {', '.join(SYSTEMS)}")
    quiet_libraries()
    seed_everything(SEEDS[0])
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    data = load_interactions(args.dataset, root=args.data_dir)
    split = split_dataset(data)
    held = pick_cold_items(split, 0.1, np.random.default_rng(SEEDS[0]))
    cold = cold_start_split(split, held)
    log(f"{data.summary()}; eval users {len(split.eval_users())}; cold items {len(held)}, "
        f"cold eval users {len(cold.eval_users())}; systems {','.join(chosen)}")
    ctx = Context(args, data, split, cold, log)
    load_before = os.getloadavg()
    rows, cold_rows = [], []
    for key in chosen:
        row, cold_row = run_system(key, SYSTEMS[key], ctx)
        rows.append(row)
        cold_rows.append(cold_row)
    policy_rows = cold_policies(rows, ctx)
    load = f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (1-min, 2 CPU cores)"
    data_dir = os.path.relpath(args.data_dir, RESULTS.parent.parent) if args.data_dir else None  # no machine paths
    argv = [data_dir if args.data_dir and a == args.data_dir else a for a in sys.argv[1:]]
    record = {
        "protocol": __doc__.split("Systems:")[0].strip(),
        "command": " ".join(["python -m benchmarks.recsys_movielens", *argv]),
        "data": {**data.summary(), "eval_users": len(split.eval_users()), "cold_items": len(held),
                 "cold_eval_users": len(cold.eval_users()), "threshold": split.threshold},
        "seeds": list(SEEDS), "systems": rows, "cold_start": cold_rows, "cold_policy": policy_rows,
        "config": {"args": vars(args) | {"data_dir": data_dir}, "torch_threads": torch.get_num_threads(), "load_average_1min": load,
                   "grids": {"ease_l2": list(EASE.LAMBDAS), "als": ALS.GRID, "bpr": BPR.GRID, "half_life": HALF_LIVES},
                   "packages": {p: version(p) for p in ("implicit", "scipy", "faiss-cpu")}},
    }
    md = table(rows, cold_rows, len(split.eval_users()), len(held), load) + "\n".join(cold_policy_table(policy_rows))
    md += "\n" if policy_rows else ""
    name = "recsys_movielens" if args.dataset.startswith("movielens") else f"recsys_{args.dataset}"
    if args.quick or chosen != list(SYSTEMS):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(), **record}
        (out / f"{name}.json").write_text(json.dumps(_jsonable(record), indent=2))
        (out / f"{name}.md").write_text(md)
        plot(rows, out / f"{name}.png")
    else:
        write_record(name, _jsonable(record), md)
        plot(rows, RESULTS / f"{name}.png")
    print(md)


if __name__ == "__main__":
    main()
