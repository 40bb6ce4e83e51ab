"""HTTP service for the intent router, on the shared serving skeleton (core.serving.app).

POST /v1/route     {"text": "..."} or {"texts": ["...", ...]}   -> route(s), each with request_id and model_version
POST /v1/feedback  {"request_id", "intent" | "intents": [...], "text"?}  -> {"request_id", "label", ...}  (only with
                   a prediction log; a list of intents, for a multi-intent message, is stored as "a|b")
GET  /v1/drift     the drift report of the served model (solutions.support.monitoring)
GET  /healthz, /readyz, /metrics, /docs, /openapi.json: see core.serving.app (with a token set, only
health and readiness are public unless the operator opens docs/metrics; feedback and drift need
the token like routing).
The model loads once. Requests go through a micro-batcher: while a batch runs, new requests queue
up and run together as the next (no added wait for a lone request); ServiceLimits.parallel_batches
batches run at once, each on its own inference thread (default one, so torch's threads are not
oversubscribed). Text is checked at the door (core.serving.app.check_texts); should a merged batch
still fail, each request in it is re-run alone, so one bad request never fails another.
Each batch reads the served model once (solutions.support.deployment.Deployment, which a
registry watcher may swap between batches), then, on the same thread, logs its rows to the
prediction log (core.mlops.prediction_logs: an SQLite file, or PostgreSQL shared by several replicas,
so feedback may reach any replica; one transaction per batch) and hands them to the drift monitor's
queue. A logging failure never fails the request: it logs a warning, counts in
verticals_prediction_log_failures_total and answers with fresh request ids (feedback on those gets
a 404), or, when the PostgreSQL log kept the batch to write after an outage, with the kept ids
(verticals_prediction_log_backlog_rows waiting; verticals_prediction_log_dropped_rows_total given up).
Feedback while the database is down gets a 503 (nothing stored: send it again).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, StrictStr

from core.data.multilabel import LABEL_SEPARATOR, MAX_LABELS_PER_ROW
from core.foundation.errors import UserError
from core.foundation.labels import label_name_problem
from core.mlops.feedback import MAX_LABEL_CHARS, PredictionLogUnavailable, UnknownRequestId
from core.serving.app import Access, ServiceLimits, check_texts, create_service
from solutions.support.deployment import Deployment, FunctionRouter, RegistryWatcher, ServedModel
from solutions.support.monitoring import DriftMonitor, MonitorSettings
from solutions.support.router import LABEL_KEY

log = logging.getLogger("verticals.support.service")
__all__ = ["FeedbackRequest", "MicroBatcher", "RouteRequest", "RouterService", "create_app"]


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None


class FeedbackRequest(BaseModel):
    """The right answer for a routed request: a known intent, "out_of_scope", or a new intent name;
    or, for a message with several intents, `intents`: a list of them (exactly one of the two).
    `text`: the routed text, needed when the log keeps only its hash (it must match)."""

    model_config = ConfigDict(extra="forbid")
    request_id: StrictStr
    intent: StrictStr | None = None
    intents: list[StrictStr] | None = None
    text: StrictStr | None = None

    def label(self) -> str:
        """What the prediction log stores: the intent, or the intents joined by "|"."""
        return self.intent if self.intent is not None else LABEL_SEPARATOR.join(self.intents)


class MicroBatcher:
    """Runs `fn(list_of_texts) -> list_of_results` on worker threads, merging queued requests; up to
    `parallel` merged batches at once (ONNX Runtime releases the GIL: one 1-thread batch per core keeps
    every core busy, without one call's threads waiting on each other). If a merged call raises,
    each request of the batch is run alone: only the ones that fail by themselves get the exception."""

    def __init__(self, fn: Callable[[list[str]], list], max_batch: int, parallel: int = 1):
        if parallel < 1:
            raise UserError(f"parallel batches must be at least 1, got {parallel}")
        self.fn, self.max_batch, self.parallel = fn, max_batch, parallel
        self.executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="inference")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in [self.task, *self.running]:
            if task:
                task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.parallel)
        while True:
            batch = [await self.queue.get()]
            await slots.acquire()  # while every slot is busy, more requests queue up and join this batch
            size = len(batch[0][0])
            while size < self.max_batch and not self.queue.empty():
                item = self.queue.get_nowait()
                batch.append(item)
                size += len(item[0])
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self.running.add(task)
            task.add_done_callback(lambda done: (self.running.discard(done), slots.release()))

    async def _run_batch(self, batch: list) -> None:
        loop = asyncio.get_running_loop()
        flat = [t for texts, _ in batch for t in texts]
        try:
            results = await loop.run_in_executor(self.executor, self.fn, flat)
        except Exception as exc:
            if len(batch) == 1:  # it already ran alone: its own failure
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("a batch of %d requests failed; running each alone", len(batch))
            for item in batch:
                await self._run_alone(loop, item)
            return
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


def _served(model, info: dict | None) -> Deployment:
    if isinstance(model, Deployment):
        return model
    if isinstance(model, ServedModel):
        return Deployment(model)
    return Deployment(ServedModel(FunctionRouter(model, info), "unversioned"))


class Inference:
    """What the micro-batcher runs on its thread: route on the current model, stamp ids and the
    model version, log the batch, feed the drift monitor."""

    def __init__(self, deployment: Deployment, prediction_log, monitor: DriftMonitor, metrics: RouterMetrics):
        self.deployment, self.prediction_log, self.monitor = deployment, prediction_log, monitor
        self.failures, self.dropped, self.dropped_seen = metrics.log_failures, metrics.log_dropped, 0
        self.write_latency = metrics.log_latency

    def __call__(self, texts: list[str]) -> list[dict]:
        served = self.deployment.current  # once per batch: a swap lands between batches
        rows, embeddings = served.route(texts)
        ids = self._log(rows, served.version)
        for row, request_id in zip(rows, ids):
            row["request_id"], row["model_version"] = request_id, served.version
        self.monitor.offer(served, embeddings, rows)
        return rows

    def _log(self, rows: list[dict], version: str) -> list[str]:
        if self.prediction_log is not None:
            started = time.perf_counter()
            try:
                return self.prediction_log.log(rows, version, label_key=LABEL_KEY)
            except PredictionLogUnavailable as exc:  # the database is down: the batch waits in memory
                self.failures.inc()
                log.warning("could not log %d routed texts now (%s); answering with the kept ids", len(rows), exc)
                return exc.request_ids
            except Exception as exc:  # the disk is full, the file went away...: answer anyway
                self.failures.inc()
                log.warning("could not log %d routed texts to the prediction log (%s: %s); answering without",
                            len(rows), type(exc).__name__, exc)
            finally:
                self.write_latency.observe(time.perf_counter() - started)
                self.dropped.inc(self.prediction_log.dropped_rows - self.dropped_seen)
                self.dropped_seen = self.prediction_log.dropped_rows
        return [uuid.uuid4().hex for _ in rows]


def _check_intents(intents: list[str]) -> None:
    """A multi-intent answer: 1..MAX_LABELS_PER_ROW distinct names, each under the label rule."""
    if not intents or len(intents) > MAX_LABELS_PER_ROW:
        raise HTTPException(422, f"intents: give 1 to {MAX_LABELS_PER_ROW} intent names, got {len(intents)}")
    for i, name in enumerate(intents):
        problem = label_name_problem(name) or ("holds '|', which separates intents" if LABEL_SEPARATOR in name else None)
        if problem:
            raise HTTPException(422, f"intents[{i}]: {repr(name)[:80]} {problem}")
    if len(set(intents)) < len(intents):
        raise HTTPException(422, "intents: the same intent appears twice")


def _check_intent(intent: str) -> None:
    problem = label_name_problem(intent)  # the label rule every label name meets (core.foundation.labels)
    if problem:
        raise HTTPException(422, f"intent: {repr(intent)[:80]} {problem}")


def _check_feedback(body: FeedbackRequest, limits: ServiceLimits) -> None:
    if not body.request_id or len(body.request_id) > limits.max_id_chars:
        raise HTTPException(422, f"request_id: give the id a /v1/route answer carried (at most {limits.max_id_chars} characters)")
    if (body.intent is None) == (body.intents is None):
        raise HTTPException(422, 'send exactly one of "intent" or "intents" (a list, for several intents)')
    if body.intents is not None:
        _check_intents(body.intents)
        if len(body.label()) > MAX_LABEL_CHARS:
            raise HTTPException(422, f"intents: {len(body.label())} characters together; at most {MAX_LABEL_CHARS}")
    else:
        _check_intent(body.intent)
    if body.text is not None:
        check_texts([body.text], limits, "text")


@dataclass(frozen=True)
class RouterMetrics:
    """The router's own Prometheus metrics, on the app's registry (core.serving.app counts requests)."""

    routes: Counter
    latency: Histogram
    feedback: Counter
    model: Gauge
    log_failures: Counter
    log_backlog: Gauge
    log_dropped: Counter
    log_latency: Histogram
    reloads: Counter

    @classmethod
    def register(cls, registry) -> RouterMetrics:
        return cls(
            routes=Counter("verticals_routes_total", "Routed texts by outcome", ["outcome"], registry=registry),
            latency=Histogram("verticals_route_latency_seconds", "Latency of /v1/route", registry=registry,
                              buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)),
            feedback=Counter("verticals_feedback_total", "Feedback requests by outcome", ["outcome"],
                             registry=registry),
            model=Gauge("verticals_model_served", "1 for the model version being served", ["model_version"],
                        registry=registry),
            log_failures=Counter("verticals_prediction_log_failures_total",
                                 "Routed batches the prediction log could not store (answered anyway)",
                                 registry=registry),
            log_backlog=Gauge("verticals_prediction_log_backlog_rows",
                              "Routed rows kept in memory while the log's database is down, to write when it is back",
                              registry=registry),
            log_dropped=Counter("verticals_prediction_log_dropped_rows_total",
                                "Routed rows the prediction log gave up on (its outage backlog was full)",
                                registry=registry),
            log_latency=Histogram("verticals_prediction_log_write_seconds",
                                  "Seconds the inference thread spent logging one batch (one transaction)",
                                  registry=registry, buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                                              0.25, 1, 5)),
            reloads=Counter("verticals_model_reloads_total", "Registry champion changes by outcome", ["outcome"],
                            registry=registry))


class RouterService:
    """What the routes and the app's start and stop share: the deployment, the prediction log and
    the registry watcher given to `create_app`, and the metrics, drift monitor and micro-batcher,
    which need the app's metrics registry and so are attached (`attach`) once the app exists."""

    def __init__(self, deployment: Deployment, *, limits: ServiceLimits, info: dict | None, prediction_log,
                 watcher: RegistryWatcher | None):
        self.deployment, self.limits, self.info = deployment, limits, info
        self.prediction_log, self.watcher = prediction_log, watcher
        self.feedback_executor = (None if prediction_log is None else
                                  ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback"))
        self.metrics: RouterMetrics | None = None
        self.monitor: DriftMonitor | None = None
        self.batcher: MicroBatcher | None = None

    def attach(self, registry, monitoring: MonitorSettings) -> None:
        self.metrics = RouterMetrics.register(registry)
        self.monitor = DriftMonitor(registry, monitoring)
        inference = Inference(self.deployment, self.prediction_log, self.monitor, self.metrics)
        if self.prediction_log is not None:
            self.metrics.log_backlog.set_function(lambda: self.prediction_log.backlog_rows)
        self.batcher = MicroBatcher(inference, self.limits.batch_size, self.limits.parallel_batches)
        self.deployment.on_swap.append(self._swapped)
        if self.watcher is not None:
            self.watcher.on_reload = lambda outcome: self.metrics.reloads.labels(outcome).inc()

    def router(self) -> APIRouter:
        """POST /v1/route, GET /v1/drift, and POST /v1/feedback when there is a prediction log."""
        router = APIRouter()
        router.add_api_route("/v1/route", self.route, methods=["POST"])
        router.add_api_route("/v1/drift", self.drift, methods=["GET"])
        if self.prediction_log is not None:
            router.add_api_route("/v1/feedback", self.feedback, methods=["POST"])
        return router

    async def route(self, body: RouteRequest):
        if (body.text is None) == (body.texts is None):
            raise HTTPException(422, 'send exactly one of "text" or "texts"')
        texts = check_texts([body.text] if body.text is not None else body.texts, self.limits,
                            "text" if body.text is not None else "texts")
        start_time = time.perf_counter()
        results = await self.batcher.submit(texts)
        self.metrics.latency.observe(time.perf_counter() - start_time)
        for r in results:
            self.metrics.routes.labels(r.get("fallback_reason") or "routed").inc()
        # plain dicts of str/float/bool/None: JSONResponse directly, skipping jsonable_encoder
        return JSONResponse(results[0] if body.text is not None else {"routes": results})

    async def drift(self):
        return JSONResponse(self.monitor.latest)

    async def feedback(self, body: FeedbackRequest):
        _check_feedback(body, self.limits)
        loop = asyncio.get_running_loop()
        try:
            row = await loop.run_in_executor(self.feedback_executor, lambda: self.prediction_log.record_feedback(
                body.request_id, body.label(), body.text))
        except UnknownRequestId as exc:
            self.metrics.feedback.labels("unknown_request").inc()
            raise HTTPException(404, str(exc)) from None
        except PredictionLogUnavailable as exc:
            self.metrics.feedback.labels("unavailable").inc()
            log.warning("feedback on %s not stored: %s", body.request_id, exc)
            raise HTTPException(503, "the prediction log's database is unavailable; nothing was stored, send the "
                                     "feedback again", headers={"Retry-After": "1"}) from None
        except UserError as exc:
            self.metrics.feedback.labels("refused").inc()
            raise HTTPException(422, str(exc)) from None
        self.metrics.feedback.labels("recorded").inc()
        return JSONResponse(row if body.intents is None else row | {"labels": list(body.intents)})

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.batcher.start()
        self.monitor.start()
        # first call pays one-off costs, not the first user (not logged: no one asked)
        await loop.run_in_executor(self.batcher.executor, self.deployment.current.route, ["warm up"])
        self.metrics.model.labels(self.deployment.current.version).set(1)
        if self.watcher is not None:
            self.watcher.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.watcher.stop)
        await self.batcher.stop()
        self.monitor.stop()
        if self.feedback_executor is not None:
            self.feedback_executor.shutdown(wait=True)

    def describe(self) -> dict:
        shown = dict(self.info) if self.info else self.deployment.current.describe()
        return {**shown, "model_version": self.deployment.current.version,
                "prediction_log": self.prediction_log is not None, "follows_registry": self.watcher is not None}

    def _swapped(self, old: ServedModel, new: ServedModel) -> None:
        self.metrics.model.labels(new.version).set(1)
        if old.version == new.version:
            return
        try:
            self.metrics.model.remove(old.version)
        except KeyError:
            pass


def create_app(model: Callable[[list[str]], list[dict]] | ServedModel | Deployment, *, info: dict | None = None,
               token: str | None = None, access: Access | None = None, limits: ServiceLimits = ServiceLimits(),
               extra_routers: tuple = (), prediction_log=None,
               monitoring: MonitorSettings = MonitorSettings(), watcher: RegistryWatcher | None = None):
    """`model`: a ServedModel (router + version + drift baseline; see solutions.support.deployment),
    a Deployment to swap, or a bare `route_batch(texts) -> rows` function (e.g.
    IntentRouter.route_batch; results then carry model_version "unversioned").
    `info` is shown by an authorised /readyz (default: the served model's describe());
    `access` (or just `token`) says who may call what; `extra_routers` are APIRouters to mount;
    `prediction_log`: a core.mlops.prediction_logs.open_prediction_log log, SQLite or PostgreSQL
    (None: nothing logged, no /v1/feedback);
    `monitoring`: how often drift is computed; `watcher`: a RegistryWatcher following a registry
    (started and stopped with the app)."""
    service = RouterService(_served(model, info), limits=limits, info=info, prediction_log=prediction_log,
                            watcher=watcher)
    app = create_service("verticals intent router", (service.router(), *extra_routers),
                         access=access or Access(token=token), limits=limits, info=service.describe,
                         on_start=service.start, on_stop=service.stop,
                         request_hint={"/v1/route": 'send {"text": "..."} or {"texts": ["...", ...]}',
                                       "/v1/feedback": 'send {"request_id": "...", "intent": "..."} or '
                                                       '{"request_id": "...", "intents": ["...", ...]}'})
    service.attach(app.state.registry, monitoring)
    app.state.deployment, app.state.drift = service.deployment, service.monitor
    return app
