"""HTTP API for recommendations over a live item index, on the shared serving skeleton.

  POST   /v1/recommend    {"user_id": "u01"} or {"items": ["i1", "i2"]}, "k", "filter", "exclude_seen"
  POST   /v1/similar      {"item_id": "i1"} or {"text": "..."}, "k", "filter"
  POST   /v1/items        {"id", "text", "metadata"}: embed and add (409 if the id exists)
  PUT    /v1/items/{id}   {"text", "metadata"}: re-embed and replace (404 if unknown)
  DELETE /v1/items/{id}   remove (404 if unknown)
  POST   /v1/events       {"user", "item", "timestamp"?, "rating"?} or a list of them: interactions
                          folded into the users' histories (the next /v1/recommend for the user sees
                          them; a new user gets a history). Timestamp: Unix seconds or ISO 8601
                          (default: now). Each event is checked alone: a list is answered with one
                          result per event (`status` 200 or the 4xx and its `error`), 200 if any
                          was taken, else the first refusal's status; a single event is a plain
                          200 or 4xx. Taken events are journaled (fsync) before the answer.
  GET    /healthz, /readyz, /metrics, /docs: core.serving.app

Access (bearer token, every route but health/readiness), body and text limits, JSON checks and
metrics come from core.serving.app, the same skeleton as the support router. Writes go through
`Recommender` (solutions.recsys.live): a 2xx means the change is in the journal on disk, so it
survives kill -9. Ids are 1..`max_id_chars` characters of visible text and may hold `/`
(the item routes take the rest of the path). Metadata is a flat object of strings, numbers and
booleans (or lists of strings, like genres). Bad ids get 404, bad payloads 400/422, an existing id on POST 409, each with a message.
Leaves out: building the index (cli `recsys index`) and starting the server (cli `recsys serve`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from core.foundation.errors import UserError
from core.foundation.text import has_visible_text
from core.serving.app import Access, ServiceLimits, check_texts, create_service
from solutions.recsys.data import Interaction, parse_timestamp
from solutions.recsys.events import rating_problem, timestamp_problem
from solutions.recsys.live import DuplicateItem, Recommender, UnknownItem

__all__ = ["Recommender", "create_app", "recsys_router"]

MAX_K = 1000
MAX_METADATA_KEYS = 64
Scalar = StrictStr | StrictBool | StrictInt | StrictFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Strict):
    user_id: StrictStr | None = None
    items: list[StrictStr] | None = None
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    filter: dict[StrictStr, StrictStr] | None = None
    exclude_seen: StrictBool = True


class SimilarRequest(_Strict):
    item_id: StrictStr | None = None
    text: StrictStr | None = None
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    filter: dict[StrictStr, StrictStr] | None = None


class ItemPayload(_Strict):
    text: StrictStr
    metadata: dict[StrictStr, Scalar | list[StrictStr]] | None = None


class NewItem(ItemPayload):
    id: StrictStr


class Event(_Strict):
    user: StrictStr
    item: StrictStr
    timestamp: StrictInt | StrictFloat | StrictStr | None = None
    rating: StrictInt | StrictFloat | None = None


class EventRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _hits(rows: list[tuple[str, float]]) -> dict:
    return {"items": [{"id": item_id, "score": round(score, 6)} for item_id, score in rows]}


def id_problem(item_id: str, name: str, limits: ServiceLimits) -> str | None:
    if not 1 <= len(item_id) <= limits.max_id_chars:
        return f"{name}: {len(item_id)} characters; give 1 to {limits.max_id_chars}"
    if not has_visible_text(item_id) or any(ord(ch) < 32 for ch in item_id):
        return f"{name}: must be visible text without control characters"
    return None


def check_id(item_id: str, limits: ServiceLimits, name: str = "id") -> str:
    problem = id_problem(item_id, name, limits)
    if problem:
        raise HTTPException(422, problem)
    return item_id


def check_filter(where: dict | None, limits: ServiceLimits) -> dict | None:
    if where and len(where) > MAX_METADATA_KEYS:
        raise HTTPException(413, f"filter: {len(where)} keys; at most {MAX_METADATA_KEYS}")
    for key, value in (where or {}).items():
        if len(key) > limits.max_id_chars or len(value) > limits.max_chars:
            raise HTTPException(413, "filter: a key or value is too long")
    return where


def check_item(item: ItemPayload, limits: ServiceLimits) -> None:
    check_texts([item.text], limits, "text")
    if item.metadata and len(item.metadata) > MAX_METADATA_KEYS:
        raise HTTPException(413, f"metadata: {len(item.metadata)} keys; at most {MAX_METADATA_KEYS}")
    for key, value in (item.metadata or {}).items():
        values = value if isinstance(value, list) else [value]
        if len(key) > limits.max_id_chars or len(values) > MAX_METADATA_KEYS or \
                any(isinstance(v, str) and len(v) > limits.max_chars for v in values):
            raise HTTPException(413, f"metadata: key or value of '{key[:40]}' is too long")


def parse_event(raw: Any, name: str, state: Recommender, limits: ServiceLimits) -> Interaction:
    """One event of a request as an Interaction, or EventRefused with the status and reason."""
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(".".join([name, *map(str, e["loc"])]) + f": {e['msg']}" for e in exc.errors()[:3])
        raise EventRefused(422, f"{fields} (send user, item and optionally timestamp, rating)") from None
    for value, key in ((event.user, "user"), (event.item, "item")):
        problem = id_problem(value, f"{name}.{key}", limits)
        if problem:
            raise EventRefused(422, problem)
    if isinstance(event.timestamp, str) and len(event.timestamp) > 64:
        raise EventRefused(422, f"{name}.timestamp: {len(event.timestamp)} characters; send Unix seconds or ISO 8601")
    now = time.time()
    try:
        stamp = now if event.timestamp is None else parse_timestamp(event.timestamp, f"{name}.timestamp")
    except (UserError, OverflowError) as exc:
        raise EventRefused(422, str(exc)) from None
    problem = timestamp_problem(stamp, now)
    if problem:
        raise EventRefused(422, f"{name}.{problem}")
    problem = None if event.rating is None else rating_problem(event.rating, state.catalog)
    if problem:
        raise EventRefused(422, f"{name}.{problem}")
    if event.item not in state.index:
        raise EventRefused(404, f"{name}: unknown item id '{event.item[:100]}'; add it with POST /v1/items first")
    return Interaction(event.user, event.item, stamp, None if event.rating is None else float(event.rating))


def request_history(req: RecommendRequest, state: Recommender) -> list[str]:
    """The history a /v1/recommend request asks about: the user's, or the items it lists."""
    if req.user_id is not None:
        if req.user_id not in state.catalog.histories:
            raise HTTPException(404, f"unknown user id '{req.user_id[:100]}'; send 'items' (recent item ids) instead")
        return state.catalog.histories[req.user_id]
    if not req.items:
        raise HTTPException(400, "'items' must list at least one item id")
    if len(req.items) > MAX_K:
        raise HTTPException(413, f"items: {len(req.items)} ids; at most {MAX_K}")
    unknown = [i[:100] for i in req.items if i not in state.index]
    if unknown:
        raise HTTPException(404, f"unknown item id(s): {', '.join(unknown[:5])}")
    return req.items


def take_events(raws: list, single: bool, state: Recommender, limits: ServiceLimits) -> list[dict]:
    """Per event: {"status": 200} if taken (journaled and folded in), else its 4xx and error."""
    results: list[dict] = [{} for _ in raws]
    parsed = {}
    for i, raw in enumerate(raws):
        try:
            parsed[i] = parse_event(raw, "event" if single else f"events[{i}]", state, limits)
        except EventRefused as exc:
            results[i] = {"status": exc.status, "error": str(exc)}
    problems = state.add_events(list(parsed.values())) if parsed else []
    for i, problem in zip(parsed, problems):  # an item removed since the check: refused under the lock
        results[i] = {"status": 404, "error": f"{problem}"} if problem else {"status": 200}
    return results


def events_answer(results: list[dict], single: bool):
    """A single event: 200 or its 4xx. A list: one result per event, 200 if any was taken, else the
    first refusal's status."""
    if single:
        if results[0]["status"] != 200:
            raise HTTPException(results[0]["status"], results[0]["error"])
        return {"accepted": 1, "rejected": 0}
    accepted = sum(r["status"] == 200 for r in results)
    content = {"accepted": accepted, "rejected": len(results) - accepted,
               "results": [{"index": i, **r} for i, r in enumerate(results)]}
    if accepted:
        return content
    first = results[0]
    return JSONResponse(status_code=first["status"], content={"error": first["error"], **content})


def add_read_routes(router: APIRouter, state: Recommender, limits: ServiceLimits) -> None:
    """POST /v1/recommend and /v1/similar."""

    @router.post("/v1/recommend")
    def recommend(req: RecommendRequest) -> dict:
        if (req.user_id is None) == (req.items is None):
            raise HTTPException(400, "give exactly one of 'user_id' or 'items' (a list of recent item ids)")
        check_filter(req.filter, limits)
        history = request_history(req, state)
        try:
            return _hits(state.recommend(history, req.k, req.filter, req.exclude_seen))
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None

    @router.post("/v1/similar")
    def similar(req: SimilarRequest) -> dict:
        if (req.item_id is None) == (req.text is None):
            raise HTTPException(400, "give exactly one of 'item_id' or 'text'")
        check_filter(req.filter, limits)
        if req.item_id is not None:
            if req.item_id not in state.index:
                raise HTTPException(404, f"unknown item id '{req.item_id[:100]}'")
            try:
                return _hits(state.similar_to_item(req.item_id, req.k, req.filter))
            except UserError as exc:  # removed between the check and the lookup
                raise HTTPException(404, str(exc)) from None
        check_texts([req.text], limits, "text")
        return _hits(state.similar_to_text(req.text, req.k, req.filter))


def add_item_routes(router: APIRouter, state: Recommender, limits: ServiceLimits) -> None:
    """POST /v1/items, PUT and DELETE /v1/items/{id}: writes, journaled before the answer."""

    @router.post("/v1/items", status_code=201)
    def add_item(item: NewItem) -> dict:
        check_id(item.id, limits)
        check_item(item, limits)
        try:
            count = state.add_item(item.id, item.text, item.metadata)
        except DuplicateItem as exc:
            raise HTTPException(409, f"{exc}; use PUT /v1/items/{{id}} to change it") from None
        return {"id": item.id, "items": count}

    @router.put("/v1/items/{item_id:path}")
    def update_item(item_id: str, item: ItemPayload) -> dict:
        check_id(item_id, limits)
        check_item(item, limits)
        try:
            count = state.update_item(item_id, item.text, item.metadata)
        except UnknownItem as exc:
            raise HTTPException(404, str(exc)) from None
        return {"id": item_id, "items": count}

    @router.delete("/v1/items/{item_id:path}")
    def delete_item(item_id: str) -> dict:
        check_id(item_id, limits)
        try:
            count = state.remove_item(item_id)
        except UnknownItem as exc:
            raise HTTPException(404, str(exc)) from None
        return {"id": item_id, "items": count}


def add_event_routes(router: APIRouter, state: Recommender, limits: ServiceLimits) -> None:
    """POST /v1/events: one event or a list, each checked alone (module docstring)."""

    @router.post("/v1/events")
    def add_events(body: Any = Body(..., examples=[{"user": "u01", "item": "i001", "rating": 4.5}])):
        if not isinstance(body, (dict, list)):
            raise HTTPException(422, "the body must be one event {\"user\", \"item\", \"timestamp\"?, \"rating\"?} "
                                     "or a list of them")
        single = isinstance(body, dict)
        raws = [body] if single else body
        if not raws:
            raise HTTPException(422, "give at least one event: {\"user\", \"item\"} or a list of them")
        if len(raws) > limits.max_batch:
            raise HTTPException(413, f"{len(raws)} events; at most {limits.max_batch} per request")
        return events_answer(take_events(raws, single, state, limits), single)


def recsys_router(state: Recommender, limits: ServiceLimits = ServiceLimits()) -> APIRouter:
    router = APIRouter()
    add_read_routes(router, state, limits)
    add_item_routes(router, state, limits)
    add_event_routes(router, state, limits)
    return router


def create_app(state: Recommender, *, access: Access = Access(), limits: ServiceLimits = ServiceLimits()):
    """The recsys app; on shutdown the Recommender compacts its journal into the saved index."""

    async def stop():  # the final compaction writes the index: off the event loop
        await asyncio.to_thread(state.close)

    def info() -> dict:
        return {"items": len(state.index), "factory": state.index.factory, "dim": state.index.dim}

    return create_service("verticals recsys", (recsys_router(state, limits),), access=access, limits=limits,
                          info=info, on_stop=stop)
