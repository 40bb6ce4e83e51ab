"""EASE (Steck 2019) served by scoring: an index directory whose recommendations are EASE's own
ranking, computed at request time from the history.

EASE has no item vectors (its model is a dense item-item matrix B), so it cannot go into the
FAISS index the way ALS's factors do; it ranks by scoring every item instead. `build_ease_index`
writes a text index (solutions.recsys.catalog.build_index: the text encoder's vectors of every
item, metadata, catalog, titles) and beside it EASE's state: ease.safetensors (B over the items
with a training positive, float32; no pickles) + ease.json (format_version, kind "ease", l2,
items, active). `Recommender.load` (solutions.recsys.live) sees ease.json and hands
`recommend(history)` to `EASEScorer`: history row @ B (baselines.EASE.score itself, so the served
ranking is the offline protocol's ranking of the same model), the history excluded, the metadata
filter applied, top k. Items B does not cover (no training positive, or added later through
POST /v1/items) rank after every covered item, among themselves in catalog order then by id, as
`rank_cold_last` and the protocol's tie rule rank them offline. Events posted to /v1/events change
the history and so the next answer, without a refit. What the index's text vectors serve:
/v1/similar (by item or text: text cosine), new items by text, and `recommend` for a history
none of whose items B covers (the text index's recency-weighted query).
Memory: B is dense float32, 4·n² bytes for n items with a training positive: about 380 MB for
9,742 items (ml-latest-small), 1.6 GB for 20,000; `EASE.fit` refuses above max_items (20,000),
since the fit's peak is about 12·n² bytes. Per request the cost is one sparse row times B and a
sort of the catalog (milliseconds for 10,000 items).
Leaves out: the fit and its search (baselines.EASE, solutions.recsys.ease_recipe), folding new
items into B (a refit), and catalogs past max_items (use ALS: solutions.recsys.factors_index).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from core.foundation.errors import UserError
from solutions.recsys.baselines import EASE, choose_on_validation
from solutions.recsys.catalog import build_index
from solutions.recsys.hits import matches
from solutions.recsys.index import ItemIndex
from solutions.recsys.protocol import RankingSplit

EASE_FILE, EASE_META = "ease.safetensors", "ease.json"
FORMAT_VERSION = 1


def bytes_of_b(n: int) -> int:
    """What B holds in memory for `n` items with a training positive (dense float32)."""
    return 4 * n * n


def fit_ease(split: RankingSplit, max_items: int = 20_000) -> tuple[EASE, list[dict]]:
    """EASE fitted on `split` with l2 chosen on its validation cut over EASE.LAMBDAS; the model and
    every l2's validation NDCG@10."""
    best, points = choose_on_validation(lambda **p: EASE(**p, max_items=max_items),
                                        [{"l2": v} for v in EASE.LAMBDAS], split)
    return EASE(**best, max_items=max_items).fit(split), points


def save_ease(model: EASE, directory: str | Path, **extra) -> None:
    """ease.safetensors (B over the active items) + ease.json (l2, max_items, items, which are active)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"weights": np.ascontiguousarray(model.weights, dtype=np.float32)}, str(directory / EASE_FILE))
    meta = {"format_version": FORMAT_VERSION, "kind": "ease", "l2": float(model.l2), "max_items": model.max_items,
            "items": list(model.items), "active": [int(i) for i in model.active], **extra}
    (directory / EASE_META).write_text(json.dumps(meta))


def load_ease(directory: str | Path) -> tuple[EASE, dict]:
    """The model saved by `save_ease` in `directory` (ready to score, no refit), and its ease.json."""
    directory = Path(directory)
    meta = json.loads((directory / EASE_META).read_text())
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "ease":
        raise UserError(f"{directory / EASE_META}: not an EASE model this version reads "
                        f"(format {meta.get('format_version')!r}, kind {meta.get('kind')!r}); rebuild it")
    weights = load_file(str(directory / EASE_FILE))["weights"]
    active = np.asarray(meta["active"], dtype=np.int64)
    if weights.shape != (len(active), len(active)):
        raise UserError(f"{directory}: B is {weights.shape} for {len(active)} active items; the files do not "
                        f"belong together, rebuild the index")
    model = EASE(l2=meta["l2"], max_items=meta.get("max_items", 20_000))
    model.items, model.active, model.weights = list(meta["items"]), active, weights
    model.item_index = {item: i for i, item in enumerate(model.items)}
    return model, meta


def has_ease_model(directory: str | Path) -> bool:
    return (Path(directory) / EASE_META).is_file()


def is_ease_run(path: str | Path) -> bool:
    """A run directory of the EASE recipe (`verticals train recsys/ease`): its model/ holds ease.json."""
    return has_ease_model(Path(path) / "model")


class EASEScorer:
    """Ranks the live index's items for a history with EASE's scores (see the module docstring)."""

    def __init__(self, model: EASE):
        self.model = model
        self.covered = {model.items[i] for i in model.active}
        warm = np.zeros(len(model.items), dtype=bool)
        warm[model.active] = True
        self.warm = warm

    def scores(self, history: list[str]) -> np.ndarray | None:
        """EASE's [n_catalog] scores (catalog order, uncovered items at the floor), or None when no
        history item is covered by B (the caller falls back to the text vectors)."""
        if not any(item in self.covered for item in history):
            return None
        return self.model.score([[(item, 0.0) for item in history]])[0]

    def recommend(self, index: ItemIndex, history: list[str], k: int, where: dict | None = None,
                  exclude: set[str] | None = None) -> list[tuple[str, float]] | None:
        """Top-k (id, score) of the index's items, `exclude` left out and `where` applied; None as in `scores`."""
        if k < 1:
            raise UserError("k must be at least 1")
        scores = self.scores(history)
        if scores is None:
            return None
        floor = scores[self.model.active].min() - np.float32(1.0)  # rank_cold_last's value for an uncovered item
        exclude = exclude or set()
        ids = [item for item in index.ids if item not in exclude]
        position = self.model.item_index
        pos = np.fromiter((position.get(item, -1) for item in ids), dtype=np.int64, count=len(ids))
        known = pos >= 0
        value = np.full(len(ids), floor, dtype=np.float32)
        value[known] = np.where(self.warm[pos[known]], scores[pos[known]], floor)
        tie = pos.copy()  # the protocol breaks ties by catalog order; items added later follow, by id
        new = np.flatnonzero(~known)
        tie[new[np.argsort(np.asarray([ids[i] for i in new], dtype=object), kind="stable")]] = \
            len(position) + np.arange(len(new))
        out = []
        for i in np.lexsort((tie, -value.astype(np.float64))):
            if where and not matches(index.metadata.get(ids[i]), where):
                continue
            out.append((ids[i], float(value[i])))
            if len(out) == k:
                break
        return out


def load_ease_scorer(directory: str | Path) -> EASEScorer:
    return EASEScorer(load_ease(directory)[0])


def build_ease_index(model: EASE, data, out: str | Path, *, encoder: str, data_spec: str, factory: str = "Flat",
                     metadata_columns: tuple[str, ...] = (), half_life: float = 5.0, threshold: float | None = None,
                     data_dir: str | None = None, items: str | None = None, progress: bool = False) -> ItemIndex:
    """Write the servable index of a fitted EASE `model` (the module docstring): every item of `data`
    with its `encoder` text vector and metadata, the catalog, and EASE's state; returns the index."""
    if not len(model.active):
        raise UserError("the EASE model has no item with a training positive: nothing to score")
    index = build_index(data, encoder, Path(out), data_spec=data_spec, factory=factory,
                        metadata_columns=metadata_columns, half_life=half_life, threshold=threshold,
                        data_dir=data_dir, items=items, progress=progress)
    save_ease(model, out)
    return index
