"""MovieLens (ml-latest-small): what text embeddings, fine-tuning and a hybrid buy over
collaborative baselines, and whether new items can be recommended on day one.

Protocol (solutions.recsys.protocol): per user, the latest 20% of interactions (ordered by time,
ties in file order) are the test window; positives = rating >= 3.5; full ranking over all 9,742
movies with the user's training items excluded; users with a test positive and a training
positive are evaluated. Item text = title (year), genres, the 3 most common user tags.

Cold start: 10% of the movies that are relevant in some test window (seed 0) are held out: every
training interaction with them is removed, for every model, and only they count as relevant.
To stay honest and cheap, the one fine-tuned encoder is trained on the cold-start split's
validation-training part (held-out movies and every user's validation and test windows never
seen), and used in both tables. Hybrid alpha and content half-life are chosen on a validation
split (the same temporal cut applied to the training histories); the test windows are used once.

Systems: most-popular, item-kNN (cosine, 100 neighbours), content with pretrained MiniLM,
content with MiniLM fine-tuned on co-consumption pairs (in-batch negatives), hybrid (item-kNN +
fine-tuned content). Cost: the cost ledger around each system's fit + catalog embedding.

    python -m benchmarks.recsys_movielens --data-dir ../shared/datasets [--steps 40 --lr 1e-4 --min-support 2]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from benchmarks.record import write_record
from core.cost import CostLedger
from solutions.recsys.baselines import ItemKNN, MostPopular
from solutions.recsys.content import (ContentRecommender, HybridRecommender, TextEncoder, choose_alpha,
                                      embed_catalog)
from solutions.recsys.data import load_interactions
from solutions.recsys.finetune import FinetuneConfig, co_consumption_pairs, finetune_encoder, save_encoder
from solutions.recsys.protocol import (cold_start_split, evaluate_scores, pick_cold_items, split_dataset,
                                       validation_split)

HALF_LIVES = (5.0, 20.0, 100.0)


def evaluate(model, split) -> dict:
    return evaluate_scores(lambda users: model.score([split.history(u) for u in users]), split)


def choose_half_life(vectors, split) -> tuple[float, dict]:
    validation = validation_split(split)
    results = {h: evaluate(ContentRecommender(vectors, split.items, h), validation)["ndcg@10"] for h in HALF_LIVES}
    return max(HALF_LIVES, key=lambda h: results[h]), results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="movielens_latest_small", help="demo_catalog for a quick smoke run")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--min-support", type=int, default=2, help="keep pairs shared by this many users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/runs/recsys-movielens")
    args = parser.parse_args(argv)
    import torch

    from core.quiet import quiet_libraries
    from core.train import seed_everything

    quiet_libraries()
    seed_everything(args.seed)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    data = load_interactions(args.dataset, root=args.data_dir)
    split = split_dataset(data)
    held = pick_cold_items(split, 0.1, np.random.default_rng(args.seed))
    cold = cold_start_split(split, held)
    log(f"{data.summary()}; eval users {len(split.eval_users())}; cold items {len(held)}, "
        f"cold eval users {len(cold.eval_users())}")

    rows, cold_rows, configs = {}, {}, {}

    def run(key, title, build, extra_config=None):
        with CostLedger() as ledger:
            model = build()
        metrics = evaluate(model, split)
        rows[key] = {"key": key, "system": title, "metrics": metrics, "cost": ledger.cost.to_dict(),
                     "config": extra_config or {}}
        log(f"{key}: {metrics} ({ledger.cost.wall_seconds} s)")
        return model

    run("popular", "most-popular", lambda: MostPopular().fit(split))
    run("itemknn", "item-kNN (cosine, 100 neighbours)", lambda: ItemKNN().fit(split))

    encoder = TextEncoder.load("minilm", max_length=FinetuneConfig().max_length)
    with CostLedger() as pre_cost:
        pre_vectors = embed_catalog(encoder, split.items, data.items)
    half, half_val = choose_half_life(pre_vectors, split)
    run("content_pretrained", "content, MiniLM pretrained",
        lambda: ContentRecommender(pre_vectors, split.items, half), {"half_life": half, "validation_ndcg@10": half_val})
    rows["content_pretrained"]["cost"] = pre_cost.cost.to_dict()

    cfg = FinetuneConfig(steps=args.steps, max_seconds=args.max_seconds, lr=args.lr, min_support=args.min_support,
                         seed=args.seed)
    tuned = TextEncoder(copy.deepcopy(encoder.backbone), cfg.max_length)
    pairs = co_consumption_pairs(validation_split(cold), cfg.window, cfg.max_gap_seconds, cfg.min_support)
    log(f"fine-tuning on {len(pairs)} pairs, up to {cfg.steps} steps / {cfg.max_seconds} s")
    with CostLedger() as ft_cost:
        fit = finetune_encoder(tuned, pairs, data.items, cfg, progress=True)
        tuned_vectors = embed_catalog(tuned, split.items, data.items)
    ft_cost.cost.train_samples = fit["samples"]
    ft_cost.cost.trainable_params = sum(p.numel() for p in tuned.backbone.encoder.parameters())
    ft_cost.cost.total_params = ft_cost.cost.trainable_params
    save_encoder(tuned, Path(args.out) / "encoder")
    half_ft, half_ft_val = choose_half_life(tuned_vectors, split)
    ft_config = {**cfg.to_dict(), "steps_done": fit["steps"], "pairs": fit["pairs"],
                 "stopped_by_time": fit["stopped_by_time"], "loss_first": fit["losses"][:5],
                 "loss_last": fit["losses"][-5:], "half_life": half_ft, "validation_ndcg@10": half_ft_val}
    run("content_finetuned", "content, MiniLM fine-tuned (co-consumption, in-batch negatives)",
        lambda: ContentRecommender(tuned_vectors, split.items, half_ft), ft_config)
    rows["content_finetuned"]["cost"] = ft_cost.cost.to_dict()

    hybrid = HybridRecommender(ItemKNN(), ContentRecommender(tuned_vectors, split.items, half_ft))
    alpha, alpha_val = choose_alpha(hybrid, split)
    run("hybrid", "hybrid: item-kNN + fine-tuned content", lambda: hybrid.fit(split),
        {"alpha": alpha, "validation_ndcg@10": alpha_val})

    cold_models = {
        "popular": MostPopular().fit(cold), "itemknn": ItemKNN().fit(cold),
        "content_pretrained": ContentRecommender(pre_vectors, split.items, half),
        "content_finetuned": ContentRecommender(tuned_vectors, split.items, half_ft),
        "hybrid": HybridRecommender(ItemKNN(), ContentRecommender(tuned_vectors, split.items, half_ft), alpha).fit(cold),
    }
    for key, model in cold_models.items():
        cold_rows[key] = {"key": key, "system": rows[key]["system"], "metrics": evaluate(model, cold)}
        log(f"cold {key}: {cold_rows[key]['metrics']}")
    configs["torch_threads"] = torch.get_num_threads()
    record = {
        "protocol": __doc__.split("Systems:")[0].strip(),
        "data": {**data.summary(), "eval_users": len(split.eval_users()), "cold_items": len(held),
                 "cold_eval_users": len(cold.eval_users()), "threshold": split.threshold},
        "seed": args.seed, "systems": list(rows.values()), "cold_start": list(cold_rows.values()), "config": configs,
    }
    md = table(list(rows.values()), list(cold_rows.values()), len(split.eval_users()), len(held))
    write_record("recsys_movielens" if args.dataset.startswith("movielens") else f"recsys_{args.dataset}", record, md)
    print(md)


def table(rows: list[dict], cold_rows: list[dict], users: int, cold_items: int) -> str:
    lines = [f"Full ranking, {users} users, temporal leave-latest-20%-out, positives = rating >= 3.5, seed 0.",
             "", "| system | Recall@10 | Recall@20 | NDCG@10 | MRR | coverage@10 | fit wall s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, c = r["metrics"], r["cost"]
        lines.append(f"| {r['system']} | {m['recall@10']:.4f} | {m['recall@20']:.4f} | {m['ndcg@10']:.4f} | "
                     f"{m['mrr']:.4f} | {m['coverage@10']:.4f} | {c['wall_seconds']:.1f} | {c['peak_rss_mb']:.0f} |")
    lines += ["", f"Cold start: {cold_items} held-out movies (no training interactions for any model); "
                  "only they count as relevant.", "",
              "| system | Recall@20 (cold items) | NDCG@10 (cold items) | users |", "|---|---|---|---|"]
    for r in cold_rows:
        m = r["metrics"]
        lines.append(f"| {r['system']} | {m['recall@20']:.4f} | {m['ndcg@10']:.4f} | {m['users']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
