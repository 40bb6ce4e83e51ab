"""The served catalog: what `verticals recsys index` writes next to the FAISS index and what the
service and CLI read back: item texts, filterable metadata, user histories and the encoder used.

Layout of an index directory:
  index.faiss, index.json   the ItemIndex (vectors, id map, metadata)
  catalog.json              encoder (path or backbone name), max_length, half_life,
                            histories (user -> latest item ids, oldest first, at most 200),
                            threshold (positives), journal_seq (events folded into histories)
  titles.json               item id -> the item's text, for the CLI to show beside ids
  journal.log               item changes and interaction events made through the API since
                            the index was last saved (solutions.recsys.live; created at the first change)
  events.log                interaction events already folded into catalog.json (solutions.recsys.events)
Leaves out: the index itself (index), ranking (content, protocol) and live changes (live).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from core.data.catalog import data_root, list_cards, load_card, read_records, verified_file
from core.foundation.durable import atomic_write
from core.foundation.errors import UserError
from solutions.recsys.data import InteractionData
from solutions.recsys.index import ItemIndex
from solutions.recsys.protocol import MOVIELENS_THRESHOLD, is_positive

CATALOG_FILE = "catalog.json"
TITLES_FILE = "titles.json"
MAX_HISTORY = 200
EMBED_CHUNK = 1024  # items per progress step while indexing


@dataclass
class Catalog:
    encoder: str
    max_length: int
    half_life: float
    histories: dict[str, list[str]] = field(default_factory=dict)
    threshold: float | None = None  # ratings >= this are positives (None: every event is one)
    journal_seq: int = 0  # the last journal record whose events `histories` hold (solutions.recsys.events)
    rating_range: list[float] | None = None  # [lowest, highest] rating it was built from; None: unrated

    def save(self, directory: Path) -> None:
        atomic_write(Path(directory) / CATALOG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(self.__dict__)))

    @classmethod
    def load(cls, directory: Path) -> "Catalog":
        path = Path(directory) / CATALOG_FILE
        if not path.is_file():
            raise UserError(f"{directory} has no {CATALOG_FILE}; build it with `verticals recsys index`.")
        return cls(**json.loads(path.read_text()))


def rating_range(data: InteractionData) -> list[float] | None:
    """[lowest, highest] rating of the interactions, the scale events are checked against; None if unrated."""
    ratings = [e.rating for e in data.interactions if e.rating is not None]
    return [min(ratings), max(ratings)] if ratings else None


def user_histories(data: InteractionData, threshold: float | None = None) -> dict[str, list[str]]:
    """Each user's positives (MovieLens: rating >= 3.5; unrated: all), oldest first, latest 200."""
    if threshold is None and data.name.startswith("movielens"):
        threshold = MOVIELENS_THRESHOLD
    rows: dict[str, list] = {}
    for order, e in enumerate(data.interactions):
        if is_positive(e, threshold):
            rows.setdefault(e.user, []).append((e.timestamp, order, e.item))
    return {u: [item for _, _, item in sorted(r)][-MAX_HISTORY:] for u, r in rows.items()}


def item_metadata(spec: str, columns: list[str], *, root: str | None = None, items: str | None = None,
                  item_column: str = "item_id", rows: list[dict] | None = None) -> dict[str, dict]:
    """{item id: {column: value}} from the items file (`rows`: its rows, already read by
    load_interactions, so the file is read once); list-valued columns (the card's
    `list_separator`, e.g. MovieLens genres) become lists. Empty `columns` -> {}."""
    if not columns:
        return {}
    separator = None
    if spec in list_cards():
        card = load_card(spec)
        path = card["items"] if rows is not None else verified_file(card, card["items"], data_root(root))
        item_column, separator = card["format"]["item_id_column"], card["format"].get("list_separator")
    elif items:
        path = Path(items).expanduser()
    else:
        raise UserError("metadata columns need the items file: pass --items ITEMS.csv")
    rows = read_records(path) if rows is None else rows
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise UserError(f"{path} has no column '{missing[0]}' for metadata; its columns are {', '.join(rows[0])}")
    out = {}
    for row in rows:
        out[str(row[item_column])] = {c: str(row[c]).split(separator) if separator else row[c] for c in columns}
    return out


def save_titles(directory: Path, titles: dict[str, str]) -> None:
    atomic_write(Path(directory) / TITLES_FILE, lambda tmp: Path(tmp).write_text(json.dumps(titles)))


def load_titles(directory: Path) -> dict[str, str]:
    """{item id: text} saved at index time ({} for an index built before titles were kept;
    items added through the API have none: their text is not kept)."""
    path = Path(directory) / TITLES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def build_index(data: InteractionData, encoder_path: str, out: Path, *, data_spec: str, factory: str = "Flat",
                metadata_columns: tuple[str, ...] = (), half_life: float = 5.0, threshold: float | None = None,
                data_dir: str | None = None, items: str | None = None, progress: bool = False):
    """Embed every item of `data` with the encoder at `encoder_path` (a run's encoder/ or a
    backbone name), save the FAISS index, the catalog (user histories) and the item texts
    (titles) into `out`, and return the ItemIndex. `progress`: a bar over embedding batches on
    stderr. `verticals recsys index` and `verticals.index(...)` both call this."""
    from solutions.recsys.content import TextEncoder, embed_catalog  # lazy: loads torch; readers need no model

    encoder = TextEncoder.load(encoder_path)
    ids = sorted(data.items)
    metadata = item_metadata(data_spec, list(metadata_columns), root=data_dir, items=items,
                             rows=data.item_rows)
    chunks = [ids[start:start + EMBED_CHUNK] for start in range(0, len(ids), EMBED_CHUNK)]
    with tqdm(total=len(ids), desc="embedding items", unit="item", disable=not progress) as bar:
        vectors = []
        for chunk in chunks:
            vectors.append(embed_catalog(encoder, chunk, data.items))
            bar.update(len(chunk))
    index = ItemIndex.build(ids, np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32),
                            factory, metadata)
    index.save(out)
    save_catalog(data, out, encoder_path, encoder.max_length, half_life=half_life, threshold=threshold)
    return index


def save_catalog(data: InteractionData, out: Path, encoder_path: str, max_length: int, *, half_life: float = 5.0,
                 threshold: float | None = None) -> Catalog:
    """What an index directory holds beside the index: the catalog (user histories, the encoder
    new items' texts go through, the positive threshold events are folded with) and the titles."""
    if threshold is None and data.name.startswith("movielens"):
        threshold = MOVIELENS_THRESHOLD
    save_titles(out, {item: data.items[item] for item in sorted(data.items)})
    catalog = Catalog(str(encoder_path), max_length, half_life, user_histories(data, threshold), threshold,
                      rating_range=rating_range(data))
    catalog.save(out)
    return catalog
