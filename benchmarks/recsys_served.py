"""The served path of benchmarks/recsys_movielens.py: a fitted model written as the index directory
`verticals recsys serve` loads, the HTTP service started on loopback (uvicorn, one process), and every
evaluated user's training positives sent to POST /v1/recommend one request at a time.

Measured: NDCG@10, Recall@10/20 and MRR of the served lists (beside the offline ones: they must be
equal), the latency per recommendation as the client sees it (p50, p99, ms: request, JSON, the
model's user vector, the index search), and the requests that failed (must be 0).

Served lists and the protocol. The protocol excludes every item the user has seen (rated below the
threshold too), the request carries the positives only (what the model folds in), so the client asks
for `20 + the other seen items` and drops those, as a caller that knows its own exclusions does. The
service caps a request at 1,000 history items and k at 1,000 (solutions.recsys.service.MAX_K): a
user over a cap is sent the latest 1,000 and counted in `truncated_users` (their served list can
differ from the offline one).
Leaves out: concurrency (benchmarks/hostile_http.py and the support service's load test cover it).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from core.serving.app import ServiceLimits
from solutions.recsys.catalog import save_catalog
from solutions.recsys.ease_index import save_ease
from solutions.recsys.factors_index import build_factor_index
from solutions.recsys.finetune import FinetuneConfig
from solutions.recsys.index import ItemIndex
from solutions.recsys.live import Recommender
from solutions.recsys.protocol import RankingSplit, ranking_metrics
from solutions.recsys.sequential import build_sequential_index
from solutions.recsys.service import MAX_K, create_app
from solutions.recsys.set_recommender import build_set_index
from tests.http_helpers import running

LIMITS = ServiceLimits()


def _text_index(ctx, out: Path, half_life: float = 5.0) -> None:
    """The pretrained text vectors as an index with the catalog (what the text model serves from)."""
    vectors = ctx.vectors("pretrained")[0]
    ItemIndex.build(ctx.split.items, vectors).save(out)
    save_catalog(ctx.data, out, ctx.args.backbone, FinetuneConfig().max_length, half_life=half_life)


def _ease(model, ctx, out: Path) -> None:
    _text_index(ctx, out)  # EASE's index holds the text vectors for `similar` and new items
    save_ease(model, out)


def _content(model, ctx, out: Path) -> None:
    _text_index(ctx, out, model.half_life)


INDEXERS = {  # system key -> (fitted model, ctx, out) -> an index directory `recsys serve` loads
    "ease": _ease,
    "als": lambda model, ctx, out: build_factor_index(model, ctx.data, out),
    "bpr": lambda model, ctx, out: build_factor_index(model, ctx.data, out),
    "content_pretrained": _content,
    "sequential": lambda model, ctx, out: build_sequential_index(model, ctx.data, out, encoder=ctx.args.backbone),
    "set": lambda model, ctx, out: build_set_index(model, ctx.data, out),
}


def _request(http: httpx.Client, history: list[str], hidden: set[str]) -> tuple[list[str] | None, float, bool]:
    truncated = len(history) > MAX_K or 20 + len(hidden) > MAX_K
    body = {"items": history[-MAX_K:], "k": min(MAX_K, 20 + len(hidden))}
    start = time.perf_counter()
    r = http.post("/v1/recommend", json=body)
    ms = 1000 * (time.perf_counter() - start)
    if r.status_code != 200:
        return None, ms, truncated
    return [hit["id"] for hit in r.json()["items"] if hit["id"] not in hidden][:20], ms, truncated


def served_metrics(key: str, model, ctx) -> dict | None:
    """The served path's metrics and latency for a fitted model of system `key` (None: not servable)."""
    if key not in INDEXERS:
        return None
    split: RankingSplit = ctx.split
    users = split.eval_users()
    with tempfile.TemporaryDirectory(prefix=f"served-{key}-") as tmp:
        out = Path(tmp) / "index"
        INDEXERS[key](model, ctx, out)
        rec = Recommender.load(out)
        ranked, latency, errors, truncated = [], [], 0, 0
        try:
            with running(create_app(rec, limits=LIMITS), LIMITS) as base, \
                    httpx.Client(base_url=base, timeout=60) as http:
                for user in users:
                    history = [item for item, _ in split.history(user)]
                    served, ms, cut = _request(http, history, split.seen(user) - set(history))
                    latency.append(ms)
                    errors += served is None
                    truncated += cut
                    ranked.append(served or [])
        finally:
            rec.close()
    metrics = ranking_metrics(ranked, [split.relevant(u) for u in users], len(split.items))
    return {"metrics": {k: metrics[k] for k in ("ndcg@10", "recall@10", "recall@20")}, "requests": len(users),
            "errors": errors, "truncated_users": truncated, "latency_ms_p50": float(np.median(latency)),
            "latency_ms_p99": float(np.percentile(latency, 99))}
