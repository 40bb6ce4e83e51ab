"""A servable index of a matrix-factorisation model (implicit's ALS or BPR): its item vectors in the
one FAISS index, and its own user fold-in computing the query from the history at request time.

`build_factor_index(model, data, out)` writes an index directory that `verticals recsys serve`
and `Recommender.load` serve like any other: the item factors of the items with a training
positive (an item without one has no ALS vector), mapped so that the cosine index ranks by
ALS's inner product (solutions.recsys.index.to_cosine_items: every item vector gets the same
norm through one extra coordinate; the query's extra coordinate is 0), the model's state
(factors.safetensors + factors.json: no pickles) and the catalog (user histories, rating scale).
At request time `FactorUserModel.query_vector(history)` is ALS's exact least-squares user step
against the saved item factors (implicit's `recalculate_user`, the fold-in the offline protocol
scores with; for BPR its seeded L-BFGS fold-in, solutions.recsys.factorization), so the served
ranking is the offline ranking; events posted to `/v1/events` change
the history and so the next answer, without a retrain.
Leaves out: items without interactions (an ALS index has no vector for a text: adding one is
refused with the reason; a text-to-factors map for cold items is future work) and EASE (no item vectors).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from core.foundation.errors import UserError
from solutions.recsys.catalog import save_catalog
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.index import ItemIndex, to_cosine_items, to_cosine_users

FACTORS_FILE, FACTORS_META = "factors.safetensors", "factors.json"
FORMAT_VERSION = 1
MODELS = {"als": ALS, "bpr": BPR}  # factors.json `kind` -> the class that folds users in


class FactorUserModel:
    """The factor model's user vector for a history, in the served index's (cosine-mapped) space."""

    def __init__(self, model: ALS | BPR):
        self.model = model

    def query_vector(self, history: list[str]) -> np.ndarray | None:
        """[1, factors + 1], or None when no history item has a factor (the caller falls back)."""
        known = [item for item in history if item in self.model.item_index]
        if not known:
            return None
        user = self.model.user_factors([[(item, 0.0) for item in known]])
        return to_cosine_users(np.asarray(user, dtype=np.float32).reshape(1, -1))


class NoTextVectors:
    """The encoder slot of a factor index: a text has no ALS vector, so adding items by text is refused."""

    max_length = 0

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, texts: list[str], **options) -> np.ndarray:
        raise UserError("this index serves ALS/BPR item factors: an item without interactions has no vector in it, "
                        "so items cannot be added or re-embedded by text here; add its interactions to your data and "
                        "rebuild with `verticals recsys index DATA --model als`, or index a text model")


def build_factor_index(model: ALS | BPR, data, out: str | Path, *, factory: str = "Flat", threshold: float | None = None,
                       metadata: dict | None = None) -> ItemIndex:
    """Write the servable index of a fitted ALS or BPR `model` (see the module docstring); returns the index."""
    out = Path(out)
    active = [model.items[i] for i in model.active]
    if not active:
        raise UserError("the model has no item with a training positive: nothing to index")
    vectors = np.asarray(model.item_factors, dtype=np.float32)[model.active]
    max_norm = float(np.linalg.norm(vectors, axis=1).max()) or 1.0
    index = ItemIndex.build(active, to_cosine_items(vectors, max_norm), factory,
                            {i: metadata[i] for i in active if i in metadata} if metadata else None)
    index.save(out)
    save_factors(model, out, max_norm=max_norm)
    save_catalog(data, out, "", 0, threshold=threshold)
    return index


def save_factors(model: ALS | BPR, directory: str | Path, **extra) -> None:
    """factors.safetensors (the item factors) + factors.json (params, seed, items, which have a factor)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"item_factors": np.ascontiguousarray(model.item_factors, dtype=np.float32)},
              str(directory / FACTORS_FILE))
    kind = next(name for name, cls in MODELS.items() if isinstance(model, cls))
    fold_in = {"negatives": model.negatives, "max_pairs": model.max_pairs} if kind == "bpr" else {}
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "params": model.params, "seed": model.seed, **fold_in,
            "items": list(model.items), "active": [int(i) for i in model.active], **extra}
    (directory / FACTORS_META).write_text(json.dumps(meta))


def load_factors(directory: str | Path) -> tuple[ALS | BPR, dict]:
    """The model saved by `save_factors` in `directory`, and its factors.json."""
    directory = Path(directory)
    meta = json.loads((directory / FACTORS_META).read_text())
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") not in MODELS:
        raise UserError(f"{directory / FACTORS_META}: not a factor model this version reads "
                        f"(format {meta.get('format_version')!r}, kind {meta.get('kind')!r}); rebuild it")
    factors = load_file(str(directory / FACTORS_FILE))["item_factors"]
    fold_in = {k: meta[k] for k in ("negatives", "max_pairs") if k in meta}
    model = MODELS[meta["kind"]].from_factors(factors, meta["items"], np.asarray(meta["active"], dtype=np.int64),
                                              meta["params"], seed=meta["seed"], **fold_in)
    return model, meta


def is_factor_run(path: str | Path) -> bool:
    """A run directory of a factor recipe (`verticals train recsys/als`): its model/ holds the factors."""
    return has_factor_model(Path(path) / "model")


def has_factor_model(directory: str | Path) -> bool:
    return (Path(directory) / FACTORS_META).is_file()


def load_factor_model(directory: str | Path) -> tuple[FactorUserModel, NoTextVectors]:
    """The user model and the encoder slot of an index written by `build_factor_index`."""
    model, _ = load_factors(directory)
    return FactorUserModel(model), NoTextVectors(model.item_factors.shape[1] + 1)
