"""Cold items in the collaborative index, for benchmarks/recsys_movielens.py: the text-to-vectors map and the
exposure policy (solutions.recsys.cold, cold_slots) on the benchmark's cold-start split.

For each model (tuned ALS, our set autoencoder; seed 0) fitted on the cold-start split (the held-out
movies have no training interaction): the policy chosen on the validation cut only (pseudo-cold items
held out inside it; the test windows never read) under each budget, then, on the test windows, NDCG@10
and Recall@20 over all items with and without the cold items, and the held-out items' Recall@20. Budgets:
NDCG@10 within 2% (the issue's), and NDCG@10 and Recall@20 both within 2% (reserved positions past 10
cost Recall@20, which NDCG@10 does not see).
Leaves out: serving (tests/recsys/test_cold.py holds the served ranking equal to this offline one).
"""

from __future__ import annotations

import time

import numpy as np

from solutions.recsys.baselines import rank_cold_last
from solutions.recsys.cold import Collaborative
from solutions.recsys.cold_slots import fit_cold_items, slot_scorer
from solutions.recsys.protocol import RankingSplit, evaluate_scores

BUDGETS = ({"max_metric_loss": 0.02}, {"max_metric_loss": 0.02, "max_recall_loss": 0.02})


def set_view(model) -> Collaborative:
    """A fitted SetRecommender as the cold map reads it: the items with a training positive are the learned ones."""
    return Collaborative(model.item_vectors(), model.active, model.user_vectors)


def _scores(view: Collaborative, split: RankingSplit, *, slots=None, exposure: float = 0.0, mapped=None):
    """score_users of the model with a cold-item policy (none: items without a learned vector rank last)."""
    if slots:
        return slot_scorer(view, mapped, split, *slots)
    inactive = np.setdiff1d(np.arange(len(split.items)), view.active)

    def score(users):
        users_v = view.user_vectors([split.history(u) for u in users])
        out = users_v @ np.asarray(view.item_vectors).T
        if not exposure:
            return rank_cold_last(out, view.active)
        out[:, inactive] = users_v @ mapped[inactive].T
        return out
    return score


def _measure(score, everything: RankingSplit, cold_split: RankingSplit) -> dict:
    overall = evaluate_scores(score, everything)
    return {"ndcg@10_all": overall["ndcg@10"], "recall@20_all": overall["recall@20"],
            "cold_recall@20": evaluate_scores(score, cold_split)["recall@20"]}


def cold_policy_rows(name: str, build, view_of, ctx) -> list[dict]:
    """One row per budget for the model `build()` (unfitted) seen through `view_of(fitted)`."""
    cold_split: RankingSplit = ctx.cold
    everything = RankingSplit(cold_split.items, cold_split.train, cold_split.test, cold_split.threshold)
    text = ctx.vectors("pretrained")[0]
    model = build().fit(cold_split)
    view = view_of(model)
    base = _measure(_scores(view, everything), everything, cold_split)
    rows = []
    for budget in BUDGETS:
        start = time.process_time()
        cold = fit_cold_items(lambda part: view_of(build().fit(part)), view, cold_split, text, encoder="minilm",
                              max_length=32, **budget)
        policy = _scores(view, everything, slots=cold.slots, exposure=cold.exposure,
                         mapped=cold.exposure * cold.mapping(text))
        with_cold = _measure(policy, everything, cold_split)
        rows.append({"system": name, "budget": budget, "chosen": cold.report["chosen"], "slots": cold.slots,
                     "exposure": cold.exposure, "without": base, "with": with_cold,
                     "choice_cpu_seconds": round(time.process_time() - start, 1)})
        ctx.log(f"cold policy {name} {budget}: {cold.summary()}; test cold recall@20 {with_cold['cold_recall@20']:.4f}")
    return rows


def cold_policy_table(rows: list[dict]) -> list[str]:
    lines = ["", "Cold items placed through the text-to-vectors map (ridge on the warm items' MiniLM vectors), the "
             "exposure policy chosen on the validation cut; test windows, seed 0:", "",
             "| model | budget (validation) | policy chosen | NDCG@10 all, without -> with | "
             "Recall@20 all, without -> with | cold Recall@20 |", "|---|---|---|---|---|---|"]
    for r in rows:
        b, w, c = r["budget"], r["without"], r["with"]
        budget = "NDCG@10 -2%" + (", Recall@20 -2%" if b.get("max_recall_loss") is not None else "")
        policy = (f"positions {r['slots'][0]}-{r['slots'][0] + r['slots'][1] - 1}" if r["slots"]
                  else f"scale {r['exposure']:g}" if r["exposure"] else "none (model alone)")
        lines.append(f"| {r['system']} | {budget} | {policy} | {w['ndcg@10_all']:.4f} -> {c['ndcg@10_all']:.4f} "
                     f"({c['ndcg@10_all'] / w['ndcg@10_all'] - 1:+.1%}) | {w['recall@20_all']:.4f} -> "
                     f"{c['recall@20_all']:.4f} ({c['recall@20_all'] / w['recall@20_all'] - 1:+.1%}) | "
                     f"{w['cold_recall@20']:.4f} -> {c['cold_recall@20']:.4f} |")
    return lines
