"""HTTP service for the intent router, on the shared serving skeleton (core.serving).

POST /v1/route  {"text": "..."} or {"texts": ["...", ...]}   -> route(s)
GET  /healthz, /readyz, /metrics, /docs, /openapi.json: see core.serving (with a token set, only
health and readiness are public unless the operator opens docs/metrics).
The model loads once. Requests go through a micro-batcher: while one batch runs on the CPU,
new requests queue up and run together as the next batch (no added wait for a lone request), on
a single inference thread so torch's own threads are not oversubscribed. Text is checked at the
door (core.serving.check_texts); should a merged batch still fail, each request in it is re-run
alone, so one bad request never fails another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr

from core.serving import Access, ServiceLimits, check_texts, create_service

log = logging.getLogger("verticals.support.service")
__all__ = ["Access", "MicroBatcher", "RouteRequest", "ServiceLimits", "create_app"]


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None


class MicroBatcher:
    """Runs `fn(list_of_texts) -> list_of_results` on one worker thread, merging queued requests.
    If a merged call raises, each request of the batch is run alone: only the ones that fail by
    themselves get the exception."""

    def __init__(self, fn: Callable[[list[str]], list], max_batch: int):
        self.fn, self.max_batch = fn, max_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            while size < self.max_batch and not self.queue.empty():
                item = self.queue.get_nowait()
                batch.append(item)
                size += len(item[0])
            flat = [t for texts, _ in batch for t in texts]
            try:
                results = await loop.run_in_executor(self.executor, self.fn, flat)
            except Exception as exc:
                if len(batch) == 1:  # it already ran alone: its own failure
                    if not batch[0][1].done():
                        batch[0][1].set_exception(exc)
                    continue
                log.warning("a batch of %d requests failed; running each alone", len(batch))
                for item in batch:
                    await self._run_alone(loop, item)
                continue
            start = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(results[start:start + len(texts)])
                start += len(texts)

    async def _run_alone(self, loop, item) -> None:
        texts, future = item
        try:
            result = await loop.run_in_executor(self.executor, self.fn, texts)
        except Exception as exc:  # a bug in inference for this request: fail it, keep serving
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)


def create_app(route_batch: Callable[[list[str]], list[dict]], *, info: dict | None = None,
               token: str | None = None, access: Access | None = None,
               limits: ServiceLimits = ServiceLimits(), extra_routers: tuple = ()):
    """`route_batch` is e.g. IntentRouter.route_batch; `info` is shown by an authorised /readyz;
    `access` (or just `token`) says who may call what; `extra_routers` are APIRouters to mount."""
    from prometheus_client import Counter, Histogram

    access = access or Access(token=token)
    batcher = MicroBatcher(route_batch, limits.batch_size)

    async def start():
        batcher.start()
        await batcher.submit(["warm up"])  # first call pays one-off costs, not the first user

    router = APIRouter()
    metrics = {}

    @router.post("/v1/route")
    async def route(body: RouteRequest):
        if (body.text is None) == (body.texts is None):
            raise HTTPException(422, 'send exactly one of "text" or "texts"')
        texts = check_texts([body.text] if body.text is not None else body.texts, limits,
                            "text" if body.text is not None else "texts")
        start_time = time.perf_counter()
        results = await batcher.submit(texts)
        metrics["latency"].observe(time.perf_counter() - start_time)
        for r in results:
            metrics["routes"].labels(r.get("fallback_reason") or "routed").inc()
        # plain dicts of str/float/bool/None: JSONResponse directly, skipping jsonable_encoder
        return JSONResponse(results[0] if body.text is not None else {"routes": results})

    app = create_service("verticals intent router", (router, *extra_routers), access=access, limits=limits,
                         info=(lambda: info) if info else None, on_start=start, on_stop=batcher.stop,
                         request_hint='send {"text": "..."} or {"texts": ["...", ...]}')
    registry = app.state.registry
    metrics["routes"] = Counter("verticals_routes_total", "Routed texts by outcome", ["outcome"], registry=registry)
    metrics["latency"] = Histogram("verticals_route_latency_seconds", "Latency of /v1/route", registry=registry,
                                   buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    return app
