"""HTTP service for the intent router (FastAPI + uvicorn).

POST /v1/route  {"text": "..."} or {"texts": ["...", ...]}   -> route(s)
GET  /healthz   the process is up;  GET /readyz  the model is loaded and warmed up
GET  /metrics   Prometheus text format;  GET /docs, /openapi.json  OpenAPI
The model loads once. Requests go through a micro-batcher: while one batch runs on the CPU,
new requests queue up and run together as the next batch (no added wait for a lone request), on
a single inference thread so torch's own threads are not oversubscribed.
Bad requests get a 4xx with a message, never a 500. Optional bearer token (env VERTICALS_API_TOKEN).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictStr


@dataclass(frozen=True)
class ServiceLimits:
    max_chars: int = 2000  # per text
    max_batch: int = 64  # texts per request
    max_body_bytes: int = 1_000_000
    batch_size: int = 64  # texts per model call across requests


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None


class MicroBatcher:
    """Runs `fn(list_of_texts) -> list_of_results` on one worker thread, merging queued requests."""

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
            except Exception as exc:  # a bug in inference: fail these requests, keep serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(results[start:start + len(texts)])
                start += len(texts)


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    return registry, {
        "requests": Counter("verticals_requests_total", "HTTP requests", ["path", "status"], registry=registry),
        "routes": Counter("verticals_routes_total", "Routed texts by outcome", ["outcome"], registry=registry),
        "latency": Histogram("verticals_route_latency_seconds", "Latency of /v1/route", registry=registry,
                             buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)),
    }


def create_app(route_batch: Callable[[list[str]], list[dict]], *, info: dict | None = None,
               token: str | None = None, limits: ServiceLimits = ServiceLimits(),
               extra_routers: tuple = ()) -> FastAPI:
    """`route_batch` is e.g. IntentRouter.route_batch; `extra_routers` are APIRouters to mount."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    batcher = MicroBatcher(route_batch, limits.batch_size)
    registry, metrics = _metrics()
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        await batcher.submit(["warm up"])  # first call pays one-off costs, not the first user
        state["ready"] = True
        yield
        await batcher.stop()

    app = FastAPI(title="verticals intent router", version="1", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    class CountAndLimit:
        """Plain ASGI middleware (Starlette's BaseHTTPMiddleware, behind @app.middleware, costs
        ~0.3 ms a request): refuses bodies over the limit from their Content-Length, and counts
        responses per path and status."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            status = {}

            async def send_and_count(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > limits.max_body_bytes:
                await error(413, f"request body over {limits.max_body_bytes} bytes")(scope, receive, send_and_count)
            else:
                await self.inner(scope, receive, send_and_count)
            metrics["requests"].labels(scope["path"], str(status.get("code", 500))).inc()

    app.add_middleware(CountAndLimit)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'] if x != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return error(422, "; ".join(parts) + ' (send {"text": "..."} or {"texts": ["...", ...]})')

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    def authorise(request: Request) -> None:
        if token and request.headers.get("authorization", "") != f"Bearer {token}":
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    def check(texts: list[str]) -> list[str]:
        if not texts:
            raise HTTPException(422, "texts: give at least one text")
        if len(texts) > limits.max_batch:
            raise HTTPException(413, f"texts: {len(texts)} texts; at most {limits.max_batch} per request")
        for i, text in enumerate(texts):
            if not text.strip():
                raise HTTPException(422, f"texts[{i}]: empty or whitespace-only text")
            if len(text) > limits.max_chars:
                raise HTTPException(413, f"texts[{i}]: {len(text)} characters; at most {limits.max_chars}")
        return texts

    @app.post("/v1/route", dependencies=[Depends(authorise)])
    async def route(body: RouteRequest):
        if (body.text is None) == (body.texts is None):
            raise HTTPException(422, 'send exactly one of "text" or "texts"')
        texts = check([body.text] if body.text is not None else body.texts)
        start = time.perf_counter()
        results = await batcher.submit(texts)
        metrics["latency"].observe(time.perf_counter() - start)
        for r in results:
            metrics["routes"].labels(r.get("fallback_reason") or "routed").inc()
        # plain dicts of str/float/bool/None: JSONResponse directly, skipping jsonable_encoder
        return JSONResponse(results[0] if body.text is not None else {"routes": results})

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state["ready"]:
            return error(503, "model still loading")
        return {"status": "ready", **(info or {})}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in extra_routers:
        app.include_router(router, dependencies=[Depends(authorise)])
    return app
