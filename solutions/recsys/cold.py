"""Cold items in a collaborative index: a map from an item's text embedding to a collaborative item
vector, so an item nobody has interacted with yet gets a vector at once and can be recommended.

What.
- `TextToVectors`: a ridge regression (scikit-learn's RidgeCV: one alpha for every output, chosen
  from `ALPHAS` by its efficient leave-one-out error) fitted on the *warm* items, those the model
  learned a vector for, from their text embeddings [n, text_dim] to those vectors [n, d]. Saved
  as cold_map.safetensors (coef [d, text_dim], intercept [d]) + cold_map.json; no pickles.
- Generic over the model: it reads plain arrays through `Collaborative` (item vectors with one
  row per catalog item, the rows the model learned, and user vectors for histories, scored by
  inner product). ALS and BPR enter through solutions.recsys.factors_index.factor_view; any model
  with item vectors and a user query vector (an autoencoder's `item_vectors()` and
  `query_vector(history)`) enters the same way.
- Exposure: a mapped vector is multiplied by one factor, the exposure, so a cold item scores
  `exposure * (user . map(text))`. A scale was picked over an additive bias through an extra
  coordinate because it keeps the score personal (a user whose taste points away from the item is
  pushed further away, not toward it), needs no change to the query or the index's dimension,
  and stays exact in the cosine index as long as the index's `max_norm` covers the scaled
  vectors (solutions.recsys.index.to_cosine_items). Exposure 0 means: no cold items (the model alone).
- The other policy, reserved positions for the user's best cold items in every list, and the choice among
  both (with `fit_cold_items`) are in solutions.recsys.cold_slots; `pseudo_cold` builds the validation cut
  both are scored on, and every curve point also records Recall@20 over all items.
- `choose_exposure` picks it on the validation cut only (the test windows are never read): it
  holds out `cold_fraction` of the validation-relevant items as pseudo-cold (their training
  interactions removed, protocol.cold_start_split), fits the model and the map without them, and
  scores every exposure of `EXPOSURES`: NDCG@10 over all items and the pseudo-cold items'
  Recall@20. The choice (`pick_exposure`) is the exposure with the best pseudo-cold Recall@20
  among those whose NDCG@10 is at least (1 - max_metric_loss) x the NDCG@10 of exposure 0 (ties:
  the larger exposure); default max_metric_loss 0.02. The curve comes back for reports.
- `MappedTextEncoder`: the encoder slot of a served index with a map: text -> the text encoder ->
  the map -> x exposure -> the cosine mapping, so POST /v1/items places a new item in the same
  index as the warm ones (solutions.recsys.live journals the final vector).
Why: a collaborative model alone never shows an item without interactions (cold Recall@20 0.000
on ml-latest-small); the text model alone ranks warm items far worse. The budget states how much
ranking quality on known items the product pays for showing new ones.
Leaves out: a non-linear map (a small network), folding cold items of a user's history into the
user's query (they count once they have a learned vector, after a retrain), and where the text
vectors come from (solutions.recsys.content).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from core.foundation.errors import UserError
from solutions.recsys.baselines import History, rank_cold_last
from solutions.recsys.index import to_cosine_items
from solutions.recsys.protocol import RankingSplit, cold_start_split, evaluate_scores, pick_cold_items, validation_split

MAP_FILE, MAP_META = "cold_map.safetensors", "cold_map.json"
FORMAT_VERSION = 1
ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))  # ridge penalties RidgeCV chooses from
# 0 (no cold items), then 1/16 to 16 by factors of sqrt(2): ridge shrinks the mapped vectors towards the
# mean item, so on a large catalog an exposure well above 1 is needed before a cold item reaches a top 20,
# while a small, over-fitted model (demo_catalog, 64 factors) already loses NDCG at 1/4
EXPOSURES = (0.0, *(round(float(2.0 ** (k / 2)), 4) for k in range(-8, 9)))
MAX_METRIC_LOSS = 0.02


def finite_matrix(name: str, values) -> np.ndarray:
    """`values` as a float64 [rows, dim] array; a UserError for another shape or a NaN/Inf."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"{name}: expected a 2-d array [items, dim], got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise UserError(f"{name}: NaN or Inf in {len(bad)} row(s) (first: row {bad[0]}); give finite vectors")
    return x


class TextToVectors:
    """Text embeddings [n, text_dim] -> collaborative vectors [n, dim] by ridge (module docstring)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, alpha: float):
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)  # [dim, text_dim]
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32).reshape(-1)  # [dim]
        self.alpha = float(alpha)
        if self.coef.ndim != 2 or self.coef.shape[0] != len(self.intercept):
            raise UserError(f"a text-to-vectors map needs coef [dim, text_dim] and intercept [dim]; got "
                            f"{self.coef.shape} and {self.intercept.shape}")

    @property
    def dim(self) -> int:
        return self.coef.shape[0]

    @property
    def text_dim(self) -> int:
        return self.coef.shape[1]

    @classmethod
    def fit(cls, text_vectors, item_vectors, *, alphas: tuple[float, ...] = ALPHAS) -> TextToVectors:
        """Ridge from the warm items' text vectors to their collaborative vectors (rows aligned)."""
        from sklearn.linear_model import RidgeCV  # lazy: scikit-learn loads in ~1 s; only fits need it

        x, y = finite_matrix("text vectors", text_vectors), finite_matrix("item vectors", item_vectors)
        if len(x) != len(y):
            raise UserError(f"{len(x)} text vectors for {len(y)} item vectors: give one text vector per item")
        if len(x) < 3:
            raise UserError(f"{len(x)} warm item(s): a text-to-vectors map needs at least 3 items with a "
                            f"collaborative vector to learn from")
        ridge = RidgeCV(alphas=alphas).fit(x, y)
        return cls(np.asarray(ridge.coef_).reshape(y.shape[1], x.shape[1]), np.asarray(ridge.intercept_),
                   float(ridge.alpha_))

    def __call__(self, text_vectors) -> np.ndarray:
        """[n, dim] float32 for text vectors [n, text_dim] (NaN/Inf or a wrong dimension: UserError)."""
        x = finite_matrix("text vectors", text_vectors)
        if x.shape[1] != self.text_dim:
            raise UserError(f"text vectors of dimension {x.shape[1]}; this map reads {self.text_dim} (the encoder "
                            f"it was fitted with)")
        return (x @ self.coef.T.astype(np.float64) + self.intercept).astype(np.float32)

    def save(self, directory: str | Path, **extra) -> None:
        """cold_map.safetensors (coef, intercept) + cold_map.json (alpha, dimensions, `extra`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"coef": self.coef, "intercept": self.intercept}, str(directory / MAP_FILE))
        meta = {"format_version": FORMAT_VERSION, "alpha": self.alpha, "dim": self.dim, "text_dim": self.text_dim,
                **extra}
        (directory / MAP_META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> tuple[TextToVectors, dict]:
        """The map saved by `save` in `directory`, and its cold_map.json."""
        directory = Path(directory)
        meta = json.loads((directory / MAP_META).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{directory / MAP_META}: format {meta.get('format_version')!r}, this version reads "
                            f"{FORMAT_VERSION}; rebuild the index")
        tensors = load_file(str(directory / MAP_FILE))
        return cls(tensors["coef"], tensors["intercept"], meta["alpha"]), meta


def has_cold_map(directory: str | Path) -> bool:
    return (Path(directory) / MAP_META).is_file()


@dataclass(frozen=True)
class Collaborative:
    """What the cold map needs from a fitted collaborative model (scores are user . item)."""

    item_vectors: np.ndarray  # [catalog items, dim]: one row per item of the split the model was fitted on
    active: np.ndarray  # the rows the model learned (items with a training positive)
    user_vectors: Callable[[list[History]], np.ndarray]  # histories -> [users, dim]


def check_budget(max_metric_loss: float) -> None:
    if not 0.0 <= max_metric_loss <= 1.0:
        raise UserError(f"max_metric_loss={max_metric_loss}: give a share of NDCG@10 in [0, 1], e.g. 0.02 for 2%")


def pick_exposure(curve: list[dict], max_metric_loss: float = MAX_METRIC_LOSS) -> float:
    """The exposure with the best cold Recall@20 (ties: the larger) among those whose NDCG@10 is at
    least (1 - max_metric_loss) x the NDCG@10 of exposure 0 (no cold items), which always qualifies."""
    check_budget(max_metric_loss)
    base = [point for point in curve if point["exposure"] == 0.0]
    if not base:
        raise UserError("the exposure curve has no point at exposure 0 (the model without cold items)")
    floor = (1.0 - max_metric_loss) * base[0]["ndcg@10"]
    feasible = [point for point in curve if point["ndcg@10"] >= floor]
    return float(max(feasible, key=lambda p: (p["cold_recall@20"], p["exposure"]))["exposure"])


@dataclass(frozen=True)
class PseudoCold:
    """The validation cut with `cold_fraction` of its relevant items held out as pseudo-cold: the model and
    the map fitted without them, and every user's warm and mapped scores (rows: `users`)."""

    model: Collaborative
    mapping: TextToVectors
    everything: RankingSplit  # relevance: every item
    tuning: RankingSplit  # relevance: the pseudo-cold items only
    all_users: list[str]
    cold_users: list[str]
    users: list[str]  # all_users | cold_users, sorted: the rows of the score matrices
    warm_scores: np.ndarray  # [users, catalog items]: user . learned vector (cold columns meaningless)
    cold_scores: np.ndarray  # [users, catalog items]: user . mapped vector
    is_cold: np.ndarray  # [catalog items] bool: no learned vector
    held: int

    def rows(self, chunk: list[str]) -> list[int]:
        row = {user: r for r, user in enumerate(self.users)}
        return [row[u] for u in chunk]


def pseudo_cold(fit: Callable[[RankingSplit], Collaborative], split: RankingSplit, text_vectors, *,
                cold_fraction: float = 0.1, seed: int = 0, max_users: int = 5000) -> PseudoCold:
    """The pseudo-cold validation cut every exposure policy is scored on (`choose_exposure`; and the reserved
    slots of solutions.recsys.cold_slots); the test windows are never read."""
    text_vectors = finite_matrix("text vectors", text_vectors)
    if len(text_vectors) != len(split.items):
        raise UserError(f"{len(text_vectors)} text vectors for a catalog of {len(split.items)} items: embed "
                        f"split.items in order (content.embed_catalog)")
    rng = np.random.default_rng(seed)
    validation = validation_split(split)
    held = pick_cold_items(validation, cold_fraction, rng)
    tuning = cold_start_split(validation, held)  # only the pseudo-cold items are relevant
    everything = RankingSplit(tuning.items, tuning.train, tuning.test, tuning.threshold)  # every item is
    all_users, cold_users = everything.eval_users(), tuning.eval_users()
    if not cold_users:
        raise UserError("the validation cut has no user with a training positive and a later positive on an item "
                        "held out as new, so the exposure of new items cannot be chosen: the data needs longer "
                        "histories (at least 5 interactions per user for some users) and more items")
    if len(all_users) > max_users:
        all_users = sorted(rng.choice(all_users, max_users, replace=False).tolist())
    model = fit(tuning)
    mapping = TextToVectors.fit(text_vectors[model.active], np.asarray(model.item_vectors)[model.active])
    users = sorted(set(all_users) | set(cold_users))
    user_vectors = np.asarray(model.user_vectors([everything.history(u) for u in users]), dtype=np.float64)
    is_cold = np.ones(len(everything.items), dtype=bool)
    is_cold[model.active] = False
    return PseudoCold(model, mapping, everything, tuning, all_users, cold_users, users,
                      user_vectors @ np.asarray(model.item_vectors, dtype=np.float64).T,
                      user_vectors @ np.asarray(mapping(text_vectors), dtype=np.float64).T, is_cold, len(held))


def curve_point(cut: PseudoCold, pick: Callable[[list[str]], np.ndarray], **policy) -> dict:
    """One policy's validation scores: NDCG@10 and Recall@20 over all items, the pseudo-cold items' Recall@20."""
    overall = evaluate_scores(pick, cut.everything, users=cut.all_users)
    return {**policy, "ndcg@10": overall["ndcg@10"], "recall@20": overall["recall@20"],
            "cold_recall@20": evaluate_scores(pick, cut.tuning, users=cut.cold_users)["recall@20"]}


def exposure_curve(cut: PseudoCold, exposures: tuple[float, ...]) -> list[dict]:
    """Per exposure: NDCG@10 and Recall@20 over all items and the pseudo-cold items' Recall@20."""
    curve = []
    for exposure in exposures:
        scores = cut.warm_scores.copy()
        if exposure == 0.0:
            rank_cold_last(scores, np.flatnonzero(~cut.is_cold))  # as the model scores without a map
        else:
            scores[:, cut.is_cold] = exposure * cut.cold_scores[:, cut.is_cold]

        def pick(chunk: list[str], scores=scores) -> np.ndarray:
            return scores[cut.rows(chunk)]

        curve.append(curve_point(cut, pick, exposure=float(exposure)))
    return curve


def choose_exposure(fit: Callable[[RankingSplit], Collaborative], split: RankingSplit, text_vectors, *,
                    max_metric_loss: float = MAX_METRIC_LOSS, exposures: tuple[float, ...] = EXPOSURES,
                    cold_fraction: float = 0.1, seed: int = 0, max_users: int = 5000) -> tuple[float, dict]:
    """The exposure for cold items, chosen on `split`'s validation cut (module docstring); `fit(split)`
    fits the model and returns its `Collaborative`; `text_vectors` has one row per `split.items`.
    Returns (exposure, report: the budget, the pseudo-cold items and users, the curve, the choice)."""
    check_budget(max_metric_loss)
    cut = pseudo_cold(fit, split, text_vectors, cold_fraction=cold_fraction, seed=seed, max_users=max_users)
    curve = exposure_curve(cut, tuple(sorted({0.0, *map(float, exposures)})))
    chosen = pick_exposure(curve, max_metric_loss)
    return chosen, {"exposure": chosen, **cut_report(cut, curve, max_metric_loss, cold_fraction, seed)}


def cut_report(cut: PseudoCold, curve: list[dict], max_metric_loss: float, cold_fraction: float, seed: int) -> dict:
    base = next(point for point in curve if point.get("exposure") == 0.0)
    return {"max_metric_loss": max_metric_loss, "cold_fraction": cold_fraction, "seed": seed,
            "pseudo_cold_items": cut.held, "users": len(cut.all_users), "cold_users": len(cut.cold_users),
            "ridge_alpha": cut.mapping.alpha, "ndcg_floor": (1.0 - max_metric_loss) * base["ndcg@10"], "curve": curve}


@dataclass
class ColdItems:
    """What a servable index needs to hold cold items: the map fitted on the served model, the exposure,
    the text encoder (name or path, max_length) and the text vectors of the model's items in order."""

    mapping: TextToVectors
    exposure: float
    encoder: str
    max_length: int
    item_text_vectors: np.ndarray  # [model items, text_dim], the model's item order
    report: dict = field(default_factory=dict)
    slots: tuple[int, int] | None = None  # (start, slots): reserved positions (solutions.recsys.cold_slots)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The served (scaled) collaborative vectors of the items at `rows`."""
        return self.exposure * self.mapping(self.item_text_vectors[rows])

    def summary(self) -> str:
        """The policy the validation cut chose and what it cost there, in a line."""
        curve = self.report.get("curve", [])
        base = next((p for p in curve if p.get("exposure") == 0.0), None)
        if self.slots:
            start, slots = self.slots
            what = f"new items take positions {start}-{start + slots - 1} of every list"
            chosen = next((p for p in curve if (p.get("start"), p.get("slots")) == self.slots), None)
        else:
            what = f"exposure {self.exposure:g}"
            chosen = next((p for p in curve if p.get("exposure") == self.exposure), None)
        if chosen is None or base is None or not base["ndcg@10"] or not base.get("recall@20"):
            return what
        warn = ("; positions past 10 cost Recall@20, which NDCG@10 does not see" if self.slots
                and self.slots[0] + self.slots[1] - 1 > 10 else "")
        return (f"{what} (chosen on validation): NDCG@10 {chosen['ndcg@10'] / base['ndcg@10'] - 1:+.1%} "
                f"({chosen['ndcg@10']:.4f} vs {base['ndcg@10']:.4f} without new items), Recall@20 on all items "
                f"{chosen['recall@20'] / base['recall@20'] - 1:+.1%}, new items' Recall@20 "
                f"{chosen['cold_recall@20']:.4f}{warn}")


class MappedTextEncoder:
    """The encoder slot of a served index with a cold map: texts -> text encoder -> map -> x exposure ->
    the index's cosine mapping (`max_norm`: the one the index was built with)."""

    def __init__(self, text_encoder, mapping: TextToVectors, exposure: float, max_norm: float):
        self.text_encoder, self.mapping = text_encoder, mapping
        self.exposure, self.max_norm = float(exposure), float(max_norm)
        self.max_length = text_encoder.max_length

    @property
    def dim(self) -> int:
        return self.mapping.dim + 1

    def encode(self, texts: list[str], **options) -> np.ndarray:
        return to_cosine_items(self.exposure * self.mapping(self.text_encoder.encode(texts, **options)), self.max_norm)
