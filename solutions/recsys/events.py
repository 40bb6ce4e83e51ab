"""Interaction events for the live recommender: folding them into user histories, the event
archive, and the export a retrain reads.

- An event is a `data.Interaction` (user, item, timestamp, rating). The live recommender
  (solutions.recsys.live) journals a batch of them as one record `{"op": "events", "events":
  [{"user", "item", "timestamp", "rating"}, ...]}` (one fsync per request), then folds them in.
- Folding (`fold_events`): a positive event (rating None, or >= the catalog's threshold) makes
  the item the user's latest history item (moved to the end if it was there; at most
  `catalog.MAX_HISTORY` kept); a new user gets a history. The event's timestamp is kept in the
  log but not used for the order: histories hold ids only, so an event counts as the newest.
  Lists are replaced, never changed in place, so a reader that holds a history sees it whole.
- Archive (`events.log` in the index directory, in the journal's line format: solutions.recsys.journal):
  when the live recommender compacts its journal it first appends the journal's events here (fsync), then
  saves the catalog (whose `journal_seq` says which events its histories hold), then the
  index, and only then empties the journal. A crash between those steps can leave an event in
  both the archive and the journal, or twice in the archive; `logged_events` keeps one copy per
  journal `seq`.
- Export (`logged_events`, `write_events_csv`; CLI `verticals recsys events INDEX_DIR --out
  events.csv`): every event the directory took, oldest first, as an interactions CSV
  (user_id,item_id,timestamp,rating), the own-data format of `recsys train` and `recsys index`.
Leaves out: HTTP validation (service), the journal itself (journal, live), training (recipe).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from core.foundation.durable import fsync_path
from solutions.recsys.catalog import MAX_HISTORY, Catalog
from solutions.recsys.data import Interaction
from solutions.recsys.journal import JOURNAL_FILE, frame, unframe
from solutions.recsys.protocol import is_positive

EVENTS_FILE = "events.log"
EARLIEST_TIMESTAMP = 631152000.0  # 1990-01-01T00:00:00Z: before any web log; 0 or 1e-300 is a missing value
FUTURE_SLACK_SECONDS = 86400.0  # a sender's clock may run a day ahead, not years
RATING_LIMITS = (0.0, 10.0)  # a catalog built without ratings: stars, points out of 10, or none


def event_record(events: list[Interaction]) -> dict:
    """The journal record for a batch of events (`seq` is added by the journal)."""
    return {"op": "events", "id": f"{len(events)} events",
            "events": [{"user": e.user, "item": e.item, "timestamp": e.timestamp, "rating": e.rating}
                       for e in events]}


def record_events(record: dict) -> list[Interaction]:
    return [Interaction(str(e["user"]), str(e["item"]), float(e["timestamp"]),
                        None if e.get("rating") is None else float(e["rating"])) for e in record["events"]]


def timestamp_problem(value: float, now: float) -> str | None:
    """Why `value` is not a plausible event time at `now` (Unix seconds), or None: from
    EARLIEST_TIMESTAMP (1990) to a day after `now`."""
    if not math.isfinite(value) or not EARLIEST_TIMESTAMP <= value <= now + FUTURE_SLACK_SECONDS:
        return (f"timestamp {value!r} is not a time between 1990-01-01 and a day from now (UTC); send Unix "
                f"seconds or ISO 8601, or leave it out for the time of arrival")
    return None


def rating_problem(value: int | float, catalog: Catalog) -> str | None:
    """Why `value` is not a rating on the catalog's scale, or None: within the lowest and highest
    rating of the interactions the index was built from (`catalog.rating_range`), or within
    RATING_LIMITS when they had none."""
    low, high = catalog.rating_range or RATING_LIMITS
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond any float
        number = math.inf
    if not math.isfinite(number) or not low <= number <= high:
        scale = "this catalog's scale" if catalog.rating_range else "the limits for a catalog built without ratings"
        return f"rating {number!r} is outside {scale}, {low:g} to {high:g}"
    return None


def fold_events(catalog: Catalog, events: list[Interaction]) -> None:
    """Make each positive event its user's latest history item (module docstring)."""
    histories = catalog.histories
    for event in events:
        if not is_positive(event, catalog.threshold):
            continue
        history = [item for item in histories.get(event.user, ()) if item != event.item]
        histories[event.user] = (history + [event.item])[-MAX_HISTORY:]


def archive_events(directory: Path, records: list[dict]) -> None:
    """Append journal event records to the directory's archive and fsync it."""
    path = Path(directory) / EVENTS_FILE
    created = not path.exists()
    with open(path, "ab") as handle:
        handle.write(b"".join(frame(r) for r in records))
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        fsync_path(path.parent)


def _framed_records(path: Path) -> list[dict]:
    """Good records of a file in the journal's line format; damaged lines (a torn tail) skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [r for r in (unframe(line) for line in data.split(b"\n")[:-1]) if r is not None]


def logged_events(directory: str | os.PathLike) -> list[Interaction]:
    """Every event the index directory took (archive, then the journal), once each, oldest first."""
    directory = Path(directory)
    Catalog.load(directory)  # a UserError naming the fix if this is no index directory
    by_seq = {}
    for name in (EVENTS_FILE, JOURNAL_FILE):
        for record in _framed_records(directory / name):
            if record.get("op") == "events":
                by_seq.setdefault(record["seq"], record)
    return [event for seq in sorted(by_seq) for event in record_events(by_seq[seq])]


def write_events_csv(events: list[Interaction], path: str | os.PathLike) -> Path:
    """An interactions CSV (user_id,item_id,timestamp,rating; an empty rating = no rating)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp", "rating"])
        for e in events:
            stamp = int(e.timestamp) if float(e.timestamp).is_integer() else e.timestamp
            writer.writerow([e.user, e.item, stamp, "" if e.rating is None else e.rating])
    return path
