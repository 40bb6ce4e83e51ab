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
the fine-tune is the expensive part), hybrid (item-kNN + fine-tuned content), and, when their
modules are present, the sequential model (solutions.recsys.sequential, over the pretrained text
vectors) and the cold-start blend (solutions.recsys.blend: EASE + fine-tuned content).

    python -m benchmarks.recsys_movielens --data-dir ../shared/datasets [--systems ease,als,bpr]
    python -m benchmarks.recsys_movielens --quick      # demo_catalog smoke run
Only a run of every available system on MovieLens writes benchmarks/results/ (JSON, markdown, plot)
and the README table; a subset (--systems) or --quick writes the same files under --out.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.record import RESULTS, write_record
from core.foundation.cost import CostLedger
from solutions.recsys.baselines import EASE, ItemKNN, MostPopular, choose_on_validation
from solutions.recsys.content import (ContentRecommender, HybridRecommender, TextEncoder, choose_alpha,
                                      embed_catalog)
from solutions.recsys.data import load_interactions
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.finetune import FinetuneConfig, co_consumption_pairs, finetune_encoder, save_encoder
from solutions.recsys.protocol import (RankingSplit, cold_start_split, evaluate_scores, pick_cold_items,
                                       rank_items, split_dataset, validation_split)

SEEDS = (0, 1, 2)
HALF_LIVES = (5.0, 20.0, 100.0)
METRICS = ("ndcg@10", "recall@10", "recall@20", "mrr", "coverage@10")
LATENCY_USERS = 50


def evaluate(model, split: RankingSplit) -> dict:
    return evaluate_scores(lambda users: model.score([split.history(u) for u in users]), split)


@dataclass
class Context:
    """What the systems are built from; text vectors are computed on first use and cached."""

    args: argparse.Namespace
    data: object
    split: RankingSplit
    cold: RankingSplit
    log: Callable[[str], None]
    text: dict = field(default_factory=dict)  # "pretrained"/"finetuned" -> (vectors, half_life, cost, config)
    chosen: dict = field(default_factory=dict)  # system -> (params, searched), for systems that share a choice

    def vectors(self, kind: str):
        if kind not in self.text:
            self.text[kind] = (self._pretrained if kind == "pretrained" else self._finetuned)()
        return self.text[kind]

    def _encoder(self) -> TextEncoder:
        if "encoder" not in self.text:
            self.text["encoder"] = TextEncoder.load(self.args.backbone, max_length=FinetuneConfig().max_length)
        return self.text["encoder"]

    def _pretrained(self):
        with CostLedger() as ledger:
            vectors = embed_catalog(self._encoder(), self.split.items, self.data.items)
        half, searched = choose_half_life(vectors, self.split)
        return vectors, half, ledger.cost.to_dict(), {"half_life": half, "validation_ndcg@10": searched}

    def _finetuned(self):
        a = self.args
        cfg = FinetuneConfig(steps=a.steps, max_seconds=a.max_seconds, lr=a.lr, min_support=a.min_support, seed=0)
        tuned = TextEncoder(copy.deepcopy(self._encoder().backbone), cfg.max_length)
        pairs = co_consumption_pairs(validation_split(self.cold), cfg.window, cfg.max_gap_seconds, cfg.min_support)
        self.log(f"fine-tuning the item encoder on {len(pairs)} pairs, up to {cfg.steps} steps / {cfg.max_seconds} s")
        with CostLedger() as ledger:
            fit = finetune_encoder(tuned, pairs, self.data.items, cfg, progress=not a.quick)
            vectors = embed_catalog(tuned, self.split.items, self.data.items)
        save_encoder(tuned, Path(a.out) / "encoder")
        half, searched = choose_half_life(vectors, self.split)
        config = {**cfg.to_dict(), "steps_done": fit["steps"], "pairs": fit["pairs"],
                  "stopped_by_time": fit["stopped_by_time"], "loss_first": fit["losses"][:5],
                  "loss_last": fit["losses"][-5:], "half_life": half, "validation_ndcg@10": searched}
        return vectors, half, ledger.cost.to_dict(), config


def choose_half_life(vectors, split) -> tuple[float, dict]:
    validation = validation_split(split)
    results = {h: evaluate(ContentRecommender(vectors, split.items, h), validation)["ndcg@10"] for h in HALF_LIVES}
    return max(HALF_LIVES, key=lambda h: results[h]), results


@dataclass(frozen=True)
class System:
    """`tune(ctx) -> (params, searched)` on the validation cut; `build(ctx, params, seed)` -> an unfitted model."""

    title: str
    tune: Callable
    build: Callable
    seeds: bool = False  # randomised: run every seed
    text: str | None = None  # the item vectors it needs ("pretrained" / "finetuned")
    vectors: Callable | None = None  # model -> (user_vectors(histories), item_vectors) for the index path


def _search(build, grid):
    return lambda ctx: choose_on_validation(build, grid, ctx.split)


def _ease_tune(ctx):
    if "ease" not in ctx.chosen:  # the blend reuses EASE's choice
        ctx.chosen["ease"] = choose_on_validation(EASE, [{"l2": v} for v in EASE.LAMBDAS], ctx.split)
    return ctx.chosen["ease"]


def _content(kind):
    def build(ctx, params, seed):
        vectors, half, _, _ = ctx.vectors(kind)
        return ContentRecommender(vectors, ctx.split.items, half)
    return build


def _hybrid_tune(ctx):
    vectors, half, _, _ = ctx.vectors("finetuned")
    alpha, searched = choose_alpha(HybridRecommender(ItemKNN(), ContentRecommender(vectors, ctx.split.items, half)),
                                   ctx.split)
    return {"alpha": alpha}, searched


def _sequential(ctx, params, seed):
    from solutions.recsys.sequential import SequentialConfig, SequentialRecommender

    cfg = SequentialConfig(seed=seed)
    if ctx.args.quick:
        cfg = replace(cfg, steps=20, validate_every=10)
    return SequentialRecommender(cfg, ctx.vectors("pretrained")[0])


def _blend_tune_within(max_metric_loss: float):
    """The blend's (alpha, cold_boost) on the validation cut: the best NDCG@10, or (max_metric_loss
    > 0) the largest cold boost within that share of the best: what showing new items costs."""
    def tune(ctx):
        from solutions.recsys.blend import ColdStartBlend, choose_blend

        l2 = _ease_tune(ctx)[0]["l2"]
        vectors, half, _, _ = ctx.vectors("finetuned")
        blend = ColdStartBlend(EASE(l2), ContentRecommender(vectors, ctx.split.items, half))
        (alpha, boost), searched = choose_blend(blend, ctx.split, max_metric_loss=max_metric_loss)
        return {"l2": l2, "alpha": alpha, "cold_boost": boost}, {f"{a},{b}": v for (a, b), v in searched.items()}
    return tune


_blend_tune = _blend_tune_within(0.0)


def _blend(ctx, params, seed):
    from solutions.recsys.blend import ColdStartBlend

    vectors, half, _, _ = ctx.vectors("finetuned")
    return ColdStartBlend(EASE(params["l2"]), ContentRecommender(vectors, ctx.split.items, half),
                          alpha=params["alpha"], cold_boost=params["cold_boost"])


def _nothing(ctx):
    return {}, {}


def _factors(model):
    return model.user_factors, model.item_factors


def _content_vectors(model):
    return model.user_vectors, model.item_vectors


SYSTEMS = {
    "popular": System("most-popular", _nothing, lambda ctx, p, s: MostPopular()),
    "itemknn": System("item-kNN (cosine, 100 neighbours)", _nothing, lambda ctx, p, s: ItemKNN()),
    "ease": System("EASE (Steck 2019)", _ease_tune, lambda ctx, p, s: EASE(**p)),
    "als": System("ALS (implicit)", _search(lambda **p: ALS(**p, seed=0), ALS.GRID),
                  lambda ctx, p, s: ALS(**p, seed=s), True, None, _factors),
    "bpr": System("BPR (implicit, fold-in users)", _search(lambda **p: BPR(**p, seed=0), BPR.GRID),
                  lambda ctx, p, s: BPR(**p, seed=s), True, None, _factors),
    "content_pretrained": System("content, MiniLM pretrained", _nothing, _content("pretrained"), False,
                                 "pretrained", _content_vectors),
    "content_finetuned": System("content, MiniLM fine-tuned (co-consumption, in-batch negatives)", _nothing,
                                _content("finetuned"), False, "finetuned", _content_vectors),
    "hybrid": System("hybrid: item-kNN + fine-tuned content", _hybrid_tune,
                     lambda ctx, p, s: HybridRecommender(ItemKNN(), _content("finetuned")(ctx, p, s), p["alpha"]),
                     False, "finetuned"),
}
# systems built elsewhere in the same issue: run when their module is there
OPTIONAL = {
    "sequential": ("solutions.recsys.sequential",
                   System("sequential (SASRec-style, interaction-trained, pretrained text vectors)", _nothing,
                          _sequential, True, "pretrained", lambda m: (m.user_vectors, m.item_vectors()))),
    "blend": ("solutions.recsys.blend",
              System("cold-start blend: EASE + fine-tuned content (cold items by text)", _blend_tune, _blend, False,
                     "finetuned")),
    "blend_exposure": ("solutions.recsys.blend",
                       System("cold-start blend, cold boost within 5% of its best validation NDCG@10",
                              _blend_tune_within(0.05), _blend, False, "finetuned")),
}


def available_systems() -> dict[str, System]:
    return {**SYSTEMS, **{k: s for k, (module, s) in OPTIONAL.items() if importlib.util.find_spec(module)}}


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
        import faiss

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
    runs = []
    for seed in (SEEDS if spec.seeds else (SEEDS[0],)):
        model = spec.build(ctx, params, seed)
        with CostLedger() as ledger:
            model.fit(ctx.split)
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
           "summary": summary, "latency": latency}
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
             "ms/user (score+rank) | ms/user (index) | chosen on validation |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, lat = r["summary"], r["latency"]
        chosen = ", ".join(f"{k}={v}" for k, v in r["chosen_on_validation"].items()) or "-"
        index_ms = f"{lat['index_search_ms_p50']:.2f}" if "index_search_ms_p50" in lat else "-"
        lines.append(f"| {r['system']} | {len(r['seeds'])} | {_cell(s['ndcg@10'])} | {_cell(s['recall@10'])} | "
                     f"{_cell(s['recall@20'])} | {_cell(s['mrr'])} | {_cell(s['coverage@10'])} | "
                     f"{_cell(s['fit_cpu_seconds_with_text'], 1)} | {s['peak_rss_mb']['mean']:.0f} | "
                     f"{lat['score_rank_ms_p50']:.2f} | {index_ms} | {chosen} |")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="movielens_latest_small")
    parser.add_argument("--systems", help="comma-separated keys (default: all available): "
                                          + ",".join([*SYSTEMS, *OPTIONAL]))
    parser.add_argument("--quick", action="store_true", help="smoke run: demo_catalog, 2 fine-tune steps, tiny "
                                                             "backbone, records under --out instead of results/")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--min-support", type=int, default=2, help="keep pairs shared by this many users")
    parser.add_argument("--out", default="benchmarks/runs/recsys-movielens")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.steps, args.backbone = "demo_catalog", 2, "tiny"
    systems = available_systems()
    chosen = args.systems.split(",") if args.systems else list(systems)
    unknown = [k for k in chosen if k not in systems]
    if unknown:
        parser.error(f"unknown or unavailable system(s) {', '.join(unknown)}; available: {', '.join(systems)}")
    import torch

    from core.foundation.quiet import quiet_libraries
    from core.foundation.device import seed_everything

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
        row, cold_row = run_system(key, systems[key], ctx)
        rows.append(row)
        cold_rows.append(cold_row)
    load = f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (1-min, 2 CPU cores)"
    from importlib.metadata import version

    data_dir = os.path.relpath(args.data_dir, RESULTS.parent.parent) if args.data_dir else None  # no machine paths
    argv = [data_dir if args.data_dir and a == args.data_dir else a for a in sys.argv[1:]]
    record = {
        "protocol": __doc__.split("Systems:")[0].strip(),
        "command": " ".join(["python -m benchmarks.recsys_movielens", *argv]),
        "data": {**data.summary(), "eval_users": len(split.eval_users()), "cold_items": len(held),
                 "cold_eval_users": len(cold.eval_users()), "threshold": split.threshold},
        "seeds": list(SEEDS), "systems": rows, "cold_start": cold_rows,
        "config": {"args": vars(args) | {"data_dir": data_dir}, "torch_threads": torch.get_num_threads(), "load_average_1min": load,
                   "grids": {"ease_l2": list(EASE.LAMBDAS), "als": ALS.GRID, "bpr": BPR.GRID, "half_life": HALF_LIVES},
                   "packages": {p: version(p) for p in ("implicit", "scipy", "faiss-cpu")}},
    }
    md = table(rows, cold_rows, len(split.eval_users()), len(held), load)
    name = "recsys_movielens" if args.dataset.startswith("movielens") else f"recsys_{args.dataset}"
    if args.quick or chosen != list(systems):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        from core.runs.rundir import environment

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
