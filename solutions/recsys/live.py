"""The live recommender: a saved index directory that takes writes, and keeps every write it acknowledged.

Acknowledged = durable: `add_item`, `update_item` and `remove_item` return only after the change
is in the directory's journal and fsync'd, so it survives `kill -9` (and a power cut).

- Journal (`journal.log` in the index directory; format, damage and locking rules in
  solutions.recsys.journal): one fsync'd record per change, holding the exact vector and
  metadata applied, so replay needs no encoder (an HNSW graph rebuilt by replay may link the
  vectors a little differently: same items, approximate neighbours can differ).
- Write path, under one lock so that the journal order is the apply order: existence check ->
  append + fsync -> apply to the in-memory index. The embedding (slow) runs before, outside the
  lock. If applying fails after the append, the record is cut off again (it was never
  acknowledged).
- Load: the saved index (ItemIndex.load), then replay of every journal record with
  `seq > index.journal_seq`; a gap between the two is read three times, since another process
  compacting between our two reads looks the same. A torn last record was never acknowledged
  and is dropped; other damage is a UserError (solutions.recsys.journal).
- Compaction: when the journal holds `compact_every` records (default 1000) or `compact_bytes`
  (default 64 MiB), and on `close()`: save the index, whose `journal_seq` is the last applied
  record (atomic: see solutions.recsys.index), then truncate the journal to zero and fsync.
  A crash before the save completes leaves the old index + the whole journal; one between the
  save and the truncation leaves the new index + records it already contains, which replay
  skips by `seq`. Either way nothing is lost and nothing is applied twice. Writes wait during a
  compaction; searches do not. A failed compaction (disk full) is logged and retried after
  another `compact_every` records; the writes themselves are already durable.
- Read-only use writes nothing: `load` never creates, repairs or compacts the journal. The file
  is created, and a torn tail or records the saved index already holds are cut off, at the
  first write. `close()` compacts only if there is something to fold in (records written, or
  replayed after a crash), and leaves the directory alone when another process writes it.
  (Compacting on load was rejected: it would make every reader a writer of the directory.)
- One writer per directory: the first write locks the journal and checks that nobody changed
  the directory since it was loaded (Journal.open).
- A Recommender built in memory (`Recommender(index, encoder, catalog)`, no journal) takes
  writes too, and keeps them only as long as the process lives.
- Interaction events (`add_events`) take the same path: one journal record per batch (op
  `events`), then folded into `catalog.histories`; replay on load folds the events newer than
  the saved catalog's `journal_seq`, and compaction archives them first (solutions.recsys.events).
Leaves out: HTTP (service), the journal file itself (journal), the event archive and export (events),
and embedding (content).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from core.foundation.errors import UserError
from solutions.recsys.catalog import Catalog
from solutions.recsys.cold_slots import ColdSlots, load_slots
from solutions.recsys.content import TextEncoder, recency_weights
from solutions.recsys.data import Interaction
from solutions.recsys.ease_index import has_ease_model, load_ease_scorer
from solutions.recsys.events import archive_events, event_record, fold_events, record_events
from solutions.recsys.factors_index import has_factor_model, load_factor_model
from solutions.recsys.index import ItemIndex
from solutions.recsys.journal import JOURNAL_FILE, Journal, JournalGap, decode_vector, encode_vector
from solutions.recsys.sequential import has_served_model, load_served_model
from solutions.recsys.set_recommender import has_set_model, load_set_model

COMPACT_EVERY, COMPACT_BYTES = 1000, 64 * 2**20
log = logging.getLogger("verticals.recsys")


class DuplicateItem(UserError):
    """An add of an id the index already has."""


class UnknownItem(UserError):
    """An update or removal of an id the index does not have."""


def _apply(index: ItemIndex, record: dict) -> None:
    item_id, op = record["id"], record["op"]
    if op == "add":
        metadata = record.get("metadata")
        index.add([item_id], decode_vector(record["vector"]), {item_id: metadata} if metadata else None)
    elif op == "update":
        index.update(item_id, decode_vector(record["vector"]), record.get("metadata"))
    elif op == "remove":
        index.remove([item_id])
    else:
        raise UserError(f"unknown op '{op}'")


def _replay(index: ItemIndex, catalog: Catalog, record: dict) -> None:
    """Apply one journal record on load: events to the histories (unless the saved catalog
    already holds them), item changes to the index."""
    if record["op"] != "events":
        _apply(index, record)
    elif record["seq"] > catalog.journal_seq:
        fold_events(catalog, record_events(record))


class Recommender:
    """The live state behind the router: index + encoder + user histories, and the journal that
    makes writes durable (None: in memory only)."""

    def __init__(self, index: ItemIndex, encoder: TextEncoder, catalog: Catalog, *, journal: Journal | None = None,
                 compact_every: int = COMPACT_EVERY, compact_bytes: int = COMPACT_BYTES):
        self.index, self.encoder, self.catalog = index, encoder, catalog
        self.journal = journal
        self.compact_every, self.compact_bytes = compact_every, compact_bytes
        self._encode_lock = threading.Lock()  # one forward pass at a time: 2 cores, no gain from more
        self._write_lock = threading.Lock()  # journal append + apply + compaction, one at a time
        self._compaction_paused_until = 0  # journal records; set after a failed compaction
        self._closed = False
        self._unarchived: list[dict] = []  # event records in the journal, not yet in the archive

    user_model = None  # a sequential or ALS model when the index holds its item vectors (load)
    cold_slots = None  # reserved positions for cold items (solutions.recsys.cold_slots; load)
    scorer = None  # an EASE model: it ranks by scoring the history (solutions.recsys.ease_index; load)

    @classmethod
    def load(cls, directory: str | Path, *, compact_every: int = COMPACT_EVERY,
             compact_bytes: int = COMPACT_BYTES) -> "Recommender":
        """The saved index with the journal's changes replayed; writes nothing (module docstring)."""
        directory = Path(directory)
        catalog = Catalog.load(directory)
        for attempt in range(3):  # a gap can be a writer compacting between our two reads: read again
            index, journal = ItemIndex.load(directory), Journal(directory / JOURNAL_FILE)
            try:
                pending = journal.read(after=index.journal_seq)
                break
            except JournalGap:
                if attempt == 2:
                    raise
        for record in pending:
            try:
                _replay(index, catalog, record)
            except UserError as exc:
                raise UserError(f"{journal.path}: record {record['seq']} ({record['op']} '{record['id']}') does "
                                f"not apply to the saved index: {exc}") from None
            index.journal_seq = record["seq"]
        factor_model = load_factor_model(directory) if has_factor_model(directory) else None
        if factor_model is None and has_set_model(directory):  # a set autoencoder: its user vector queries
            factor_model = load_set_model(directory)
        encoder = factor_model[1] if factor_model else TextEncoder.load(catalog.encoder, catalog.max_length)
        rec = cls(index, encoder, catalog, journal=journal, compact_every=compact_every, compact_bytes=compact_bytes)
        rec._unarchived = [r for r in pending if r["op"] == "events" and r["seq"] > catalog.journal_seq]
        if factor_model:  # the index of an ALS model or a set autoencoder: its user vector for the history queries
            rec.user_model = factor_model[0]
            place = load_slots(directory)
            if place and hasattr(rec.user_model, "learned"):  # reserved positions for its cold items
                rec.cold_slots = ColdSlots(*place, rec.user_model.learned)
        elif has_served_model(directory):  # the index of a sequential model: its user vector queries it
            rec.user_model, rec.encoder = load_served_model(directory, rec.encoder)
        elif has_ease_model(directory):  # the text index of an EASE model: B scores the history
            rec.scorer = load_ease_scorer(directory)
        return rec

    # ------------------------------------------------------------ reads
    def embed(self, texts: list[str]) -> np.ndarray:
        with self._encode_lock:
            return self.encoder.encode(texts)

    def recommend(self, history: list[str], k: int = 10, where: dict | None = None,
                  exclude_seen: bool = True) -> list[tuple[str, float]]:
        """(item id, score) for a history of item ids, oldest first (recent items weigh more).
        With a sequential model: one search with the model's user vector for the history; with EASE:
        its scores (a history none of whose items EASE covers falls back to the text vectors); with reserved
        cold-item positions (cold_map.json `slots`): the warm and cold rankings merged (solutions.recsys.cold_slots)."""
        if self.scorer is not None:
            ranked = self.scorer.recommend(self.index, history, k, where, set(history) if exclude_seen else None)
            if ranked is not None:
                return ranked
        query = self.user_model.query_vector(history) if self.user_model is not None else None
        if query is not None and self.cold_slots is not None:
            return self.cold_slots.recommend(self.index, query, k, set(history) if exclude_seen else None, where)
        if query is not None:
            return self.index.search(query, k, exclude=set(history) if exclude_seen else None, where=where).row(0)
        known = [item for item in history if item in self.index]
        if not known:
            raise UserError("none of the history items is in the index")
        vectors = np.stack([self.index.vector(item) for item in known])
        query = recency_weights(len(known), self.catalog.half_life) @ vectors
        return self.index.search(query, k, exclude=set(history) if exclude_seen else None, where=where).row(0)

    def recommend_for_user(self, user: str, k: int = 10, where: dict | None = None) -> list[tuple[str, float]]:
        """Recommendations from a known user's indexed history (UserError for an unknown user)."""
        if user not in self.catalog.histories:
            raise UserError(f"unknown user '{user}'; give recent item ids to `recommend(history)` instead")
        return self.recommend(self.catalog.histories[user], k, where)

    def similar_to_item(self, item_id: str, k: int = 10, where: dict | None = None) -> list[tuple[str, float]]:
        return self.index.search(self.index.vector(item_id), k, exclude={item_id}, where=where).row(0)

    def similar_to_text(self, text: str, k: int = 10, where: dict | None = None) -> list[tuple[str, float]]:
        return self.index.search(self.embed([text]), k, where=where).row(0)

    # ------------------------------------------------------------ writes
    def add_item(self, item_id: str, text: str, metadata: dict | None = None) -> int:
        """Embed and add; returns the number of items. DuplicateItem if the id exists."""
        vector = self.embed([text])
        with self._write_lock:
            if item_id in self.index:
                raise DuplicateItem(f"item id '{item_id}' already exists")
            return self._commit({"op": "add", "id": item_id, "vector": encode_vector(vector),
                                 "metadata": metadata or None})

    def update_item(self, item_id: str, text: str, metadata: dict | None = None) -> int:
        """Re-embed and replace (metadata None keeps the old metadata). UnknownItem if absent."""
        self._require(item_id)  # before the slow embedding; checked again under the lock
        vector = self.embed([text])
        with self._write_lock:
            self._require(item_id)
            return self._commit({"op": "update", "id": item_id, "vector": encode_vector(vector), "metadata": metadata})

    def remove_item(self, item_id: str) -> int:
        with self._write_lock:
            self._require(item_id)
            return self._commit({"op": "remove", "id": item_id})

    def add_events(self, events: list[Interaction]) -> list[str | None]:
        """Journal (one record, fsync'd) and fold into the users' histories the events whose item
        is in the index; returns, per event, None (taken) or why it was refused."""
        with self._write_lock:
            problems = [None if e.item in self.index else f"unknown item id '{e.item[:100]}'" for e in events]
            taken = [e for e, problem in zip(events, problems) if problem is None]
            if taken:
                self._commit(event_record(taken))
        return problems

    def _apply_record(self, record: dict) -> None:
        if record["op"] == "events":
            fold_events(self.catalog, record_events(record))
            if self.journal is not None:
                self._unarchived.append(record)
        else:
            _apply(self.index, record)
            if self.cold_slots is not None:
                self.cold_slots.changed(self.index, record["id"])

    def _require(self, item_id: str) -> None:
        if item_id not in self.index:
            raise UnknownItem(f"unknown item id '{item_id}'")

    def _commit(self, record: dict) -> int:
        """Journal (fsync) then apply; the caller holds the write lock."""
        if self._closed:
            raise UserError("this recommender is closed; load the directory again to change it")
        if self.journal is None:
            self._apply_record(record)
            return len(self.index)
        if not self.journal.is_open:
            self.journal.open()
        size_before = self.journal.size
        seq = self.journal.append(record)
        try:
            self._apply_record({"seq": seq, **record})  # as replay will see it (the archive keeps the seq)
        except BaseException:
            self.journal.drop_last(size_before)  # not applied, so not acknowledged: replay must not apply it
            raise
        self.index.journal_seq = seq
        records = self.journal.records
        if records >= self._compaction_paused_until and (records >= self.compact_every
                                                         or self.journal.size >= self.compact_bytes):
            self._compact()
        return len(self.index)

    def _compact(self) -> None:
        """Fold the journal into the saved index (see the module docstring); under the write lock.
        Events go first: archive, then the catalog that holds them (solutions.recsys.events)."""
        try:
            if self._unarchived:
                archive_events(self.journal.path.parent, self._unarchived)
                self.catalog.journal_seq = self.journal.last_seq
                self.catalog.save(self.journal.path.parent)
                self._unarchived = []
            self.index.save(self.journal.path.parent)
        except OSError as exc:
            self._compaction_paused_until = self.journal.records + self.compact_every
            log.warning("could not compact %s (the journal keeps every change; retrying after %d more "
                        "records): %s", self.journal.path, self.compact_every, exc)
            return
        self.journal.truncate()

    def close(self) -> None:
        """Compact if there is anything to fold in, release the directory; idempotent. Reads still work."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self.journal is None:
                return
            try:
                if self.journal.last_seq > self.journal.saved_seq:
                    if not self.journal.is_open:
                        self.journal.open()
                    self._compact()
            except UserError as exc:  # another process writes this directory (or it is read-only)
                log.warning("not compacting %s on close: %s", self.journal.path.parent, exc)
            finally:
                self.journal.close()
