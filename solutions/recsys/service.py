"""HTTP API for recommendations over a live item index (a FastAPI APIRouter factory).

  POST   /v1/recommend    {"user_id": "u01"} or {"items": ["i1", "i2"]}, "k", "filter", "exclude_seen"
  POST   /v1/similar      {"item_id": "i1"} or {"text": "..."}, "k", "filter"
  POST   /v1/items        {"id", "text", "metadata"}: embed and add (409 if the id exists)
  PUT    /v1/items/{id}   {"text", "metadata"}: re-embed and replace (404 if unknown)
  DELETE /v1/items/{id}   remove (404 if unknown)

Recommendations: the user vector is the recency-weighted mean of the stored vectors of the
user's history (content.recency_weights), searched in the index with the history excluded.
Items added through the API are recommendable at once (cold start through their text). Bad ids
get 404, bad payloads 400/422, each with a message; a UserError from below becomes a 400.
Leaves out: building the index (cli `recsys index`) and the app/server (cli `recsys serve`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from core.errors import UserError
from solutions.recsys.catalog import Catalog
from solutions.recsys.content import TextEncoder, recency_weights
from solutions.recsys.index import ItemIndex

MAX_K = 1000


class RecommendRequest(BaseModel):
    user_id: str | None = None
    items: list[str] | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    filter: dict[str, str] | None = None
    exclude_seen: bool = True


class SimilarRequest(BaseModel):
    item_id: str | None = None
    text: str | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    filter: dict[str, str] | None = None


class ItemPayload(BaseModel):
    text: str = Field(min_length=1)
    metadata: dict | None = None


class NewItem(ItemPayload):
    id: str = Field(min_length=1)


class Recommender:
    """The live state behind the router: index + encoder + user histories."""

    def __init__(self, index: ItemIndex, encoder: TextEncoder, catalog: Catalog):
        self.index, self.encoder, self.catalog = index, encoder, catalog
        self._encode_lock = threading.Lock()  # one forward pass at a time: 2 cores, no gain from more

    @classmethod
    def load(cls, directory: str | Path) -> "Recommender":
        catalog = Catalog.load(Path(directory))
        return cls(ItemIndex.load(directory), TextEncoder.load(catalog.encoder, catalog.max_length), catalog)

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._encode_lock:
            return self.encoder.encode(texts)

    def recommend(self, history: list[str], k: int, where: dict | None, exclude_seen: bool) -> list[tuple[str, float]]:
        known = [item for item in history if item in self.index]
        if not known:
            raise UserError("none of the history items is in the index")
        vectors = np.stack([self.index.vector(item) for item in known])
        query = recency_weights(len(known), self.catalog.half_life) @ vectors
        return self.index.search(query, k, exclude=set(history) if exclude_seen else None, where=where).row(0)

    def similar_to_item(self, item_id: str, k: int, where: dict | None) -> list[tuple[str, float]]:
        return self.index.search(self.index.vector(item_id), k, exclude={item_id}, where=where).row(0)

    def similar_to_text(self, text: str, k: int, where: dict | None) -> list[tuple[str, float]]:
        return self.index.search(self.embed([text]), k, where=where).row(0)


def _hits(rows: list[tuple[str, float]]) -> dict:
    return {"items": [{"id": item_id, "score": round(score, 6)} for item_id, score in rows]}


def recsys_router(state: Recommender) -> APIRouter:
    router = APIRouter()

    def require_item(item_id: str) -> None:
        if item_id not in state.index:
            raise HTTPException(404, f"unknown item id '{item_id}'")

    @router.post("/v1/recommend")
    def recommend(req: RecommendRequest) -> dict:
        if (req.user_id is None) == (req.items is None):
            raise HTTPException(400, "give exactly one of 'user_id' or 'items' (a list of recent item ids)")
        if req.user_id is not None:
            if req.user_id not in state.catalog.histories:
                raise HTTPException(404, f"unknown user id '{req.user_id}'; send 'items' (recent item ids) instead")
            history = state.catalog.histories[req.user_id]
        else:
            if not req.items:
                raise HTTPException(400, "'items' must list at least one item id")
            unknown = [i for i in req.items if i not in state.index]
            if unknown:
                raise HTTPException(404, f"unknown item id(s): {', '.join(unknown[:5])}")
            history = req.items
        try:
            return _hits(state.recommend(history, req.k, req.filter, req.exclude_seen))
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None

    @router.post("/v1/similar")
    def similar(req: SimilarRequest) -> dict:
        if (req.item_id is None) == (req.text is None):
            raise HTTPException(400, "give exactly one of 'item_id' or 'text'")
        if req.item_id is not None:
            require_item(req.item_id)
            try:
                return _hits(state.similar_to_item(req.item_id, req.k, req.filter))
            except UserError as exc:  # removed between the check and the lookup
                raise HTTPException(404, str(exc)) from None
        if not req.text.strip():
            raise HTTPException(400, "'text' is empty")
        return _hits(state.similar_to_text(req.text, req.k, req.filter))

    @router.post("/v1/items", status_code=201)
    def add_item(item: NewItem) -> dict:
        if item.id in state.index:
            raise HTTPException(409, f"item id '{item.id}' already exists; use PUT /v1/items/{item.id}")
        vector = state.embed([item.text])
        try:
            state.index.add([item.id], vector, {item.id: item.metadata} if item.metadata else None)
        except UserError as exc:  # lost a race with a concurrent add of the same id
            raise HTTPException(409, str(exc)) from None
        return {"id": item.id, "items": len(state.index)}

    @router.put("/v1/items/{item_id}")
    def update_item(item_id: str, item: ItemPayload) -> dict:
        require_item(item_id)
        vector = state.embed([item.text])
        try:
            state.index.update(item_id, vector, item.metadata)
        except UserError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"id": item_id, "items": len(state.index)}

    @router.delete("/v1/items/{item_id}")
    def delete_item(item_id: str) -> dict:
        require_item(item_id)
        try:
            state.index.remove([item_id])
        except UserError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"id": item_id, "items": len(state.index)}

    return router


def create_app(state: Recommender):
    from fastapi import FastAPI

    app = FastAPI(title="verticals recsys")
    app.include_router(recsys_router(state))
    return app
