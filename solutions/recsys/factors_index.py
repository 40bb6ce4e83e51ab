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
Cold items (`cold=`, from `factor_cold_items`; `recsys index --model als --cold-items`): a map from
an item's text embedding to its factors (solutions.recsys.cold), fitted on the items with a
factor, gives every catalog item without a training positive a vector, served by the policy chosen
on the validation cut (x an exposure, or reserved positions in every list: solutions.recsys.cold_slots;
cold_map.json `slots`), and is saved beside the factors (cold_map.safetensors + cold_map.json,
the text encoder named in the catalog), so a text added later through POST /v1/items gets its
vector the same way (PUT /v1/items re-places an item by its text, a learned one too). `max_norm`
covers the catalog's scaled cold vectors, so their rank is exact (an item added later with a
longer vector ranks approximately: index.to_cosine_items). The user fold-in reads only items with
a factor: a cold item in a history counts once a retrain has learned it. Without a map the index
holds only the items with a factor and adding an item by text is refused with the reason
(`NoTextVectors`).
Leaves out: EASE (no item vectors: solutions.recsys.ease_index serves it by scoring) and the cold-item
map and exposure policy themselves (solutions.recsys.cold, cold_slots).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from core.foundation.errors import UserError
from solutions.recsys.catalog import save_catalog
from solutions.recsys.cold import (
    MAX_METRIC_LOSS,
    ColdItems,
    Collaborative,
    MappedTextEncoder,
    TextToVectors,
    has_cold_map,
)
from solutions.recsys.cold_slots import fit_cold_items
from solutions.recsys.factorization import ALS, BPR
from solutions.recsys.index import ItemIndex, to_cosine_items, to_cosine_users

FACTORS_FILE, FACTORS_META = "factors.safetensors", "factors.json"
FORMAT_VERSION = 1
MODELS = {"als": ALS, "bpr": BPR}  # factors.json `kind` -> the class that folds users in


class FactorUserModel:
    """The factor model's user vector for a history, in the served index's (cosine-mapped) space."""

    def __init__(self, model: ALS | BPR):
        self.model = model
        self.learned = {model.items[i] for i in model.active}  # cold items have no factor to fold in

    def query_vector(self, history: list[str]) -> np.ndarray | None:
        """[1, factors + 1], or None when no history item has a factor (the caller falls back)."""
        known = [item for item in history if item in self.learned]
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
                        "so items cannot be added or re-embedded by text here; rebuild it with `verticals recsys index "
                        "DATA --model als --cold-items` (a map from text to factors), add the item's interactions to "
                        "your data and rebuild, or index a text model")


def build_factor_index(model: ALS | BPR, data, out: str | Path, *, factory: str = "Flat", threshold: float | None = None,
                       metadata: dict | None = None, cold: ColdItems | None = None) -> ItemIndex:
    """Write the servable index of a fitted ALS or BPR `model` (see the module docstring); returns the index.
    `cold`: its map places the items without a factor too (none at exposure 0: then no map is saved)."""
    out = Path(out)
    rows = np.asarray(model.active, dtype=np.int64)
    if not len(rows):
        raise UserError("the model has no item with a training positive: nothing to index")
    vectors = np.asarray(model.item_factors, dtype=np.float32)[rows]
    if cold is not None and cold.exposure > 0:
        if cold.mapping.dim != vectors.shape[1] or len(cold.item_text_vectors) != len(model.items):
            raise UserError(f"the cold map gives {cold.mapping.dim}-d vectors for {len(cold.item_text_vectors)} items; "
                            f"the model has {vectors.shape[1]}-d factors for {len(model.items)}: fit it on this model")
        cold_rows = np.setdiff1d(np.arange(len(model.items)), rows)
        vectors = np.vstack([vectors, cold.vectors(cold_rows).astype(np.float32)])
        rows = np.concatenate([rows, cold_rows])
    ids = [model.items[i] for i in rows]
    max_norm = float(np.linalg.norm(vectors, axis=1).max()) or 1.0
    index = ItemIndex.build(ids, to_cosine_items(vectors, max_norm), factory,
                            {i: metadata[i] for i in ids if i in metadata} if metadata else None)
    index.save(out)
    save_factors(model, out, max_norm=max_norm)
    if cold is not None and cold.exposure > 0:
        cold.mapping.save(out, exposure=cold.exposure, encoder=cold.encoder, max_length=cold.max_length,
                          choice=cold.report, slots=list(cold.slots) if cold.slots else None)
        save_catalog(data, out, cold.encoder, cold.max_length, threshold=threshold)
    else:
        save_catalog(data, out, "", 0, threshold=threshold)
    return index


def factor_view(model: ALS | BPR) -> Collaborative:
    """A fitted ALS or BPR as the cold map reads it: item factors, the items it learned, its user fold-in."""
    return Collaborative(np.asarray(model.item_factors), np.asarray(model.active), model.user_factors)


def factor_cold_items(model: ALS | BPR, split, texts: dict[str, str], *, encoder: str,
                      max_metric_loss: float = MAX_METRIC_LOSS, seed: int = 0,
                      max_recall_loss: float | None = None) -> ColdItems:
    """The cold items of `model` (fitted on `split`): every item embedded with the text `encoder` (a backbone
    name or a `recsys train` run's encoder), the exposure chosen on the validation cut with the model refitted
    with the same parameters, the map fitted on `model` (solutions.recsys.cold)."""
    from solutions.recsys.content import TextEncoder, embed_catalog  # lazy: loads torch; only cold maps need it

    if list(model.items) != list(split.items):
        raise UserError("the factor model was fitted on another catalog than this data's: index it with the data it "
                        "was trained on, or fit it here (--model als|bpr)")
    text_encoder = TextEncoder.load(encoder)
    vectors = embed_catalog(text_encoder, list(split.items), texts)

    fold_in = {"negatives": model.negatives, "max_pairs": model.max_pairs} if isinstance(model, BPR) else {}

    def refit(part) -> Collaborative:
        return factor_view(type(model)(**model.params, seed=model.seed, **fold_in).fit(part))

    return fit_cold_items(refit, factor_view(model), split, vectors, encoder=encoder,
                          max_length=text_encoder.max_length, max_metric_loss=max_metric_loss, seed=seed,
                          max_recall_loss=max_recall_loss)


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


def load_factor_model(directory: str | Path) -> tuple[FactorUserModel, NoTextVectors | MappedTextEncoder]:
    """The user model and the encoder slot of an index written by `build_factor_index`: text -> the cold map
    where the index has one, else the refusal."""
    model, meta = load_factors(directory)
    if not has_cold_map(directory):
        return FactorUserModel(model), NoTextVectors(model.item_factors.shape[1] + 1)
    from solutions.recsys.content import TextEncoder  # lazy: loads torch; an index without a map needs none

    mapping, cold = TextToVectors.load(directory)
    if mapping.dim != model.item_factors.shape[1]:
        raise UserError(f"{directory}: the cold map gives {mapping.dim}-d vectors for {model.item_factors.shape[1]}-d "
                        f"factors; rebuild the index")
    text_encoder = TextEncoder.load(cold["encoder"], cold["max_length"])
    return FactorUserModel(model), MappedTextEncoder(text_encoder, mapping, cold["exposure"], meta["max_norm"])
