"""The recommender in the Python API: an item-encoder run (`verticals.EncoderRun`) and `verticals.index`.

    rec = verticals.index("demo_catalog", out="index/")    # or model="runs/items" (an item-encoder run)
    rec.recommend(["i1", "i2"], k=10)
    verticals.load("runs/items").index("demo_catalog", out="index/")

A thin layer over solutions.recsys (load_interactions, build_index, the live Recommender), with
the same validation and errors.
Leaves out: training the encoder (verticals.api.train with `recsys/item-encoder`) and the command
line (`verticals recsys ...`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.quiet import quieted
from solutions.recsys.data import load_interactions


class EncoderRun:
    """A recommender item-encoder run (`recsys/item-encoder`): its report and its encoder/."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.encoder_path = self.path / "encoder"
        if not self.encoder_path.is_dir():
            raise UserError(f"{self.path} has no encoder/ (an unfinished item-encoder run?)")

    def __repr__(self) -> str:
        return f"EncoderRun({str(self.path)!r})"

    @cached_property
    def report(self) -> dict:
        return json.loads((self.path / "report.json").read_text())

    @property
    def metrics(self) -> dict:
        return self.report.get("metrics", {})

    def index(self, data: str, out: str | os.PathLike, **options):
        """Embed `data`'s catalog with this encoder into an index at `out` (see `verticals.index`)."""
        return index(data, out, model=self, **options)


def open_encoder_run(path: str | os.PathLike, *, runtime: str, threads: int | None) -> EncoderRun:
    """`verticals.load` of an item-encoder run (its encoder is a sentence-transformers directory: one
    runtime, so `runtime` and `threads` do not apply)."""
    return EncoderRun(path)


def load_index(path: Path):
    """The live Recommender of an index directory (`verticals.index`, `verticals recsys index`)."""
    from solutions.recsys.live import Recommender  # lazy: loads torch; `import verticals` must not

    with quieted():
        return Recommender.load(path)


def index(data: str, out: str | os.PathLike, *, model: str | os.PathLike | EncoderRun = "minilm",
          items: str | None = None, text_columns: Iterable[str] = ("title",), threshold: float | None = None,
          factory: str = "Flat", metadata_columns: Iterable[str] = (), half_life: float = 5.0,
          data_dir: str | None = None):
    """Build a recommender index: embed every item of `data` (a catalog name such as
    `movielens_latest_small` / `demo_catalog`, or your interactions CSV with `items=` ITEMS.csv)
    with `model` (an item-encoder run, or a backbone name) into `out`, and return the live
    Recommender (recommend, recommend_for_user, similar_to_item, similar_to_text, add_item,
    update_item, remove_item; every write journaled in `out`)."""
    from solutions.recsys.catalog import build_index  # lazy: it and its index module slow `import verticals`

    encoder = model.encoder_path if isinstance(model, EncoderRun) else Path(model)
    encoder = encoder / "encoder" if (encoder / "encoder").is_dir() else encoder
    encoder = str(encoder.resolve()) if encoder.is_dir() else str(model)  # a directory, or a backbone name
    with quieted():
        interactions = load_interactions(data, root=data_dir, items=items, item_text_columns=tuple(text_columns))
        build_index(interactions, encoder, Path(out), data_spec=data, factory=factory,
                    metadata_columns=tuple(metadata_columns), half_life=half_life, threshold=threshold,
                    data_dir=data_dir, items=items)
    return load_index(Path(out))
