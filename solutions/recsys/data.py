"""Recommendation data: user-item interactions and the texts that describe each item.

A catalog card with `task: recommendation` names an interactions file (user, item, timestamp
[, rating]), an items file whose text columns describe each item, and optionally a tags file
whose most common tags per item join the item's text (MovieLens). The card's `format:` names the
columns. Your own data: an interactions CSV/JSONL plus an items file (`items=`).
Leaves out: catalog cards, checksums and CSV/JSONL parsing (core.data.catalog); temporal splits and
positives (solutions.recsys.protocol); the served catalog (solutions.recsys.catalog).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.data.catalog import data_root, list_cards, load_card, read_records, verified_file
from core.foundation.errors import UserError


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    timestamp: float  # Unix seconds
    rating: float | None


@dataclass(frozen=True)
class InteractionData:
    name: str
    items: dict[str, str]  # item id -> text used to embed it
    interactions: list[Interaction]  # in file order
    card: dict | None = None
    item_rows: list[dict] | None = None  # the items file's rows as read (metadata comes from here: read once)

    def summary(self) -> dict:
        return {"name": self.name, "items": len(self.items), "interactions": len(self.interactions),
                "users": len({i.user for i in self.interactions})}


# Unix seconds as written in ASCII: Python's float() also reads other scripts' digits ("١٧٠٠" is 1700)
# and underscores ("1_700"), which no log or CSV means as a time
UNIX_SECONDS = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.ASCII | re.IGNORECASE)


def parse_timestamp(value: str, where: str) -> float:
    """Unix seconds or ISO 8601 (a trailing Z means UTC; no zone is read as UTC), in ASCII digits."""
    text = str(value).strip()
    if not text.isascii():
        raise UserError(f"{where}: timestamp {text[:40]!r} has characters other than ASCII; send Unix seconds "
                        f"(ASCII digits) or ISO 8601 (e.g. 2026-03-02T09:15:00Z)")
    if UNIX_SECONDS.fullmatch(text):
        return float(text)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{where}: timestamp {text!r} is neither Unix seconds nor ISO 8601 "
                        f"(e.g. 2026-03-02T09:15:00Z)") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def _require_columns(rows: list[dict], path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise UserError(f"{path} has no column '{missing[0]}'. Its columns are: {', '.join(rows[0])}. "
                        f"Name the right column in the options (e.g. item_text_columns=title,description).")


def item_texts(rows: list[dict], path: Path, id_column: str, text_columns: list[str],
               separator: str | None = None, extra: dict[str, list[str]] | None = None) -> dict[str, str]:
    """{item id: text}: the non-empty text columns joined by ". ", list values (`separator`)
    joined by ", ", then the item's `extra` phrases (e.g. its top tags)."""
    _require_columns(rows, path, [id_column, *text_columns])
    items = {}
    for row in rows:
        parts = [str(row[c]).replace(separator, ", ") if separator else str(row[c])
                 for c in text_columns if row.get(c)]
        parts += (extra or {}).get(row[id_column], [])
        items[str(row[id_column])] = ". ".join(p.strip() for p in parts if p.strip())
    return items


def interactions_from_rows(rows: list[dict], path: Path, user_column: str, item_column: str,
                           timestamp_column: str, rating_column: str | None) -> list[Interaction]:
    """One Interaction per row, in file order; no rating column (or an empty cell) -> rating None."""
    _require_columns(rows, path, [user_column, item_column, timestamp_column])
    has_rating = bool(rating_column) and rating_column in rows[0]
    out = []
    for n, row in enumerate(rows, 2):
        rating = row.get(rating_column) if has_rating else None
        out.append(Interaction(str(row[user_column]), str(row[item_column]),
                               parse_timestamp(row[timestamp_column], f"{path}, row {n}"),
                               float(rating) if rating not in (None, "") else None))
    return out


def top_tags(rows: list[dict], path: Path, item_column: str, tag_column: str,
             per_item: int = 3) -> dict[str, list[str]]:
    """{item id: its `per_item` most common tags}, lower-cased; ties keep first-seen order."""
    _require_columns(rows, path, [item_column, tag_column])
    counts: dict[str, Counter] = {}
    for row in rows:
        counts.setdefault(row[item_column], Counter())[row[tag_column].strip().lower()] += 1
    return {item: [t for t, _ in c.most_common(per_item)] for item, c in counts.items()}


def _load_card_interactions(card: dict, root: Path) -> InteractionData:
    fmt = card["format"]
    path = verified_file(card, card["interactions"], root)
    item_path = verified_file(card, card["items"], root)
    tags = None
    if card.get("item_tags"):
        tag_path = verified_file(card, card["item_tags"], root)
        tags = top_tags(read_records(tag_path, fmt["encoding"]), tag_path, fmt["item_id_column"],
                        fmt.get("tag_column", "tag"))
    rows, item_rows = read_records(path, fmt["encoding"]), read_records(item_path, fmt["encoding"])
    item_map = item_texts(item_rows, item_path, fmt["item_id_column"], fmt["item_text_columns"],
                          fmt.get("list_separator"), tags)
    events = interactions_from_rows(rows, path, fmt["user_id_column"], fmt["item_id_column"],
                                    fmt["timestamp_column"], fmt.get("rating_column"))
    return InteractionData(card["name"], item_map, events, card, item_rows)


def load_interactions(spec: str, *, root: str | os.PathLike | None = None, items: str | None = None,
                      user_column: str = "user_id", item_column: str = "item_id",
                      timestamp_column: str = "timestamp", rating_column: str | None = "rating",
                      item_text_columns: tuple[str, ...] = ("title",), encoding: str = "utf-8") -> InteractionData:
    """A catalog name (`movielens_latest_small`, `demo_catalog`) or your own interactions CSV
    (user, item, timestamp[, rating]) with `items=` an items CSV whose text columns describe each item."""
    if spec in list_cards():
        card = load_card(spec)
        if card["task"] != "recommendation":
            raise UserError(f"dataset '{spec}' is not a recommendation dataset (its task is "
                            f"{card['task']!r}); give a recommendation dataset or your own interactions file.")
        return _load_card_interactions(card, data_root(root))
    path = Path(spec).expanduser()
    if not items:
        raise UserError("your own interactions need an items file too: pass items=<items.csv> with an "
                        "id column and text columns (item_text_columns=...)")
    item_path = Path(items).expanduser()
    item_rows = read_records(item_path, encoding)
    item_map = item_texts(item_rows, item_path, item_column, list(item_text_columns))
    events = interactions_from_rows(read_records(path, encoding), path, user_column, item_column,
                                    timestamp_column, rating_column)
    unknown = sorted({e.item for e in events} - set(item_map))
    if unknown:
        raise UserError(f"{path}: {len(unknown)} item id(s) are not in {item_path}, e.g. "
                        f"{', '.join(unknown[:5])}. Add them to the items file or drop those rows.")
    return InteractionData(path.stem, item_map, events, item_rows=item_rows)


def load_recipe_data(section, data_dir: str | None) -> InteractionData:
    """The interactions a recsys recipe's `data:` section names (solutions.recsys.recipe_config: a
    catalog name, or an interactions CSV with `items` and its `text_columns`)."""
    source = section.source
    if source not in list_cards() and not Path(source).expanduser().is_file():
        raise UserError(f"unknown dataset '{source}': not a catalog name ({', '.join(list_cards())}) and no such "
                        f"file. Give a catalog name, or your interactions CSV with data.items=ITEMS.csv")
    return load_interactions(source, root=data_dir, items=section.items or None,
                             item_text_columns=tuple(c.strip() for c in section.text_columns.split(",") if c.strip()))
