"""The systems benchmarks/recsys_movielens.py compares, each as a `System`: how it is tuned on the
validation cut and how it is built, and the shared `Context` (data, splits, cached text vectors)
they are built from.

`SYSTEMS` is the list (key -> System); every system has the same shape: `tune(ctx) -> (params,
searched)` reads only the validation cut, `build(ctx, params, seed)` returns an unfitted model
with `fit(split)` and `score(histories)`. Item text vectors (pretrained MiniLM, or MiniLM
fine-tuned on co-consumption pairs of the cold-start split's validation-training part) are
computed once per run, on first use, with their cost.
Leaves out: running, timing and reporting the systems (recsys_movielens).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from core.foundation.cost import CostLedger
from solutions.recsys.autoencoder import SetConfig
from solutions.recsys.baselines import EASE, ItemKNN, MostPopular, choose_on_validation
from solutions.recsys.blend import ColdStartBlend, choose_blend
from solutions.recsys.content import ContentRecommender, HybridRecommender, TextEncoder, choose_alpha, embed_catalog
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.finetune import FinetuneConfig, co_consumption_pairs, finetune_encoder, save_encoder
from solutions.recsys.protocol import RankingSplit, evaluate_scores, validation_split
from solutions.recsys.sasrec import SequentialConfig
from solutions.recsys.sequential import SequentialRecommender
from solutions.recsys.set_recommender import SetRecommender

HALF_LIVES = (5.0, 20.0, 100.0)


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
    cfg = SequentialConfig(seed=seed)
    if ctx.args.quick:
        cfg = replace(cfg, steps=20, validate_every=10)
    return SequentialRecommender(cfg, ctx.vectors("pretrained")[0])


def _set(ctx, params, seed):
    cfg = SetConfig(seed=seed)
    if ctx.args.quick:
        cfg = replace(cfg, steps=20, validate_every=10)
    return SetRecommender(cfg, ctx.vectors("pretrained")[0])


def _blend_tune_within(max_metric_loss: float):
    """The blend's (alpha, cold_boost) on the validation cut: the best NDCG@10, or (max_metric_loss
    > 0) the largest cold boost within that share of the best: what showing new items costs."""
    def tune(ctx):
        l2 = _ease_tune(ctx)[0]["l2"]
        vectors, half, _, _ = ctx.vectors("finetuned")
        blend = ColdStartBlend(EASE(l2), ContentRecommender(vectors, ctx.split.items, half))
        (alpha, boost), searched = choose_blend(blend, ctx.split, max_metric_loss=max_metric_loss)
        return {"l2": l2, "alpha": alpha, "cold_boost": boost}, {f"{a},{b}": v for (a, b), v in searched.items()}
    return tune


_blend_tune = _blend_tune_within(0.0)


def _blend(ctx, params, seed):
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
    "sequential": System("sequential (SASRec-style, interaction-trained, pretrained text vectors)", _nothing,
                         _sequential, True, "pretrained", lambda m: (m.user_vectors, m.item_vectors())),
    "set": System("set autoencoder (ours: Mult-DAE predicting later items, item tables from pretrained text)",
                  _nothing, _set, True, "pretrained", lambda m: (m.user_vectors, m.item_vectors())),
    "blend": System("cold-start blend: EASE + fine-tuned content (cold items by text)", _blend_tune, _blend, False,
                    "finetuned"),
    "blend_exposure": System("cold-start blend, cold boost within 5% of its best validation NDCG@10",
                             _blend_tune_within(0.05), _blend, False, "finetuned"),
}
