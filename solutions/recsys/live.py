"""The live recommender: a saved index directory that takes writes, and keeps every write it acknowledged.

Acknowledged = durable: `add_item`, `update_item` and `remove_item` return only after the change
is in the directory's journal and fsync'd, so it survives `kill -9` (and a power cut).

- Journal (`journal.log` in the index directory): append-only, one record a line,
  `<crc32 of the JSON, 8 hex digits> <JSON>\\n`. A record holds `seq` (1, 2, 3, ... across the
  directory's life), `op` (add/update/remove), `id`, and for add/update the exact vector that
  was applied (base64 of little-endian float32) and the metadata, so replay needs no encoder and
  gives the same vectors and metadata (an HNSW graph rebuilt by replay may link them a little
  differently: same items, approximate neighbours can differ). The item text is not kept.
- Write path, under one lock so that the journal order is the apply order: existence check ->
  append + fsync -> apply to the in-memory index. The embedding (slow) runs before, outside the
  lock. If applying fails after the append, the record is cut off again (it was never
  acknowledged).
- Load: the saved index (ItemIndex.load), then replay of every journal record with
  `seq > index.journal_seq`. Records must be consecutive; a gap (the index is older than the
  journal; read three times, since another process compacting between our two reads looks
  the same) or a bad record followed by a good one is damage, and a UserError. A bad or partial
  record at the end is the one write that was in flight when the process died: appends are
  serialised and each is fsync'd before the next begins, so nothing after the last good record
  was ever acknowledged, and it is dropped.
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
- One writer per directory: the first write takes an exclusive `flock` on the journal (freed
  when the process dies) and checks that nobody changed the directory since it was loaded;
  either failure is a UserError, since writing from a stale copy would lose the other writes.
- A Recommender built in memory (`Recommender(index, encoder, catalog)`, no journal) takes
  writes too, and keeps them only as long as the process lives.
- Interaction events (`add_events`) take the same path: one journal record per batch (op
  `events`), then folded into `catalog.histories`; replay on load folds the events newer than
  the saved catalog's `journal_seq`, and compaction archives them first (solutions.recsys.events).
Leaves out: HTTP (service), the event archive and export (events), and embedding (content).
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import threading
import zlib
from pathlib import Path

import numpy as np

from core.foundation.errors import UserError
from solutions.recsys.catalog import Catalog
from solutions.recsys.content import TextEncoder, recency_weights
from solutions.recsys.data import Interaction
from solutions.recsys.durable import fsync_path
from solutions.recsys.events import archive_events, event_record, fold_events, record_events
from solutions.recsys.index import ItemIndex

JOURNAL_FILE = "journal.log"
COMPACT_EVERY, COMPACT_BYTES = 1000, 64 * 2**20
log = logging.getLogger("verticals.recsys")


class DuplicateItem(UserError):
    """An add of an id the index already has."""


class UnknownItem(UserError):
    """An update or removal of an id the index does not have."""


class _JournalGap(UserError):
    """The journal does not continue the saved index (possibly a compaction racing our load)."""


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(1, -1)


def frame(record: dict) -> bytes:
    """One journal line: the record's CRC-32 and its JSON (which never holds a raw newline)."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def unframe(line: bytes) -> dict | None:
    """The record in one journal line (without its newline), or None if the line is damaged."""
    crc, _, body = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body) or len(crc) != 8:
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("seq"), int) else None


class Journal:
    """The append-only change log of one index directory (format in the module docstring).
    `saved_seq` is the last record in the index saved next to it, as far as this process knows."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.saved_seq = self.last_seq = 0
        self.records = 0  # good records in the file
        self.size = 0  # bytes of the good records (the file may hold a torn tail after them)
        self._read_size = 0  # the whole file's size when it was read (0: no file)
        self._fd: int | None = None

    def read(self, after: int) -> list[dict]:
        """The records with `seq > after` (the saved index holds the rest), in order; a damaged
        tail is left out (see the module docstring). Reads only: nothing is created or repaired."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        records, size, damaged_at = [], 0, None
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1], 1):  # lines[-1] follows the last newline: torn if not empty
            record = unframe(line)
            if record is None:
                damaged_at = damaged_at or number
                continue
            if damaged_at is not None:
                raise UserError(f"{self.path}: line {damaged_at} is damaged but later records are intact; the "
                                f"journal was changed outside the service. Move the file aside to serve the last "
                                f"saved index without the changes since.")
            if records and record["seq"] != records[-1]["seq"] + 1:
                raise UserError(f"{self.path}: record {record['seq']} follows {records[-1]['seq']}; records are "
                                f"missing. Move the file aside to serve the last saved index.")
            records.append(record)
            size += len(line) + 1
        pending = [r for r in records if r["seq"] > after]
        if pending and pending[0]["seq"] != after + 1:
            raise _JournalGap(f"{self.path} continues at record {pending[0]['seq']} but the saved index holds only "
                              f"records up to {after}: the index is older than its journal (restored from a "
                              f"backup?). Restore the matching index, or move the journal aside.")
        self.records, self.size, self._read_size = len(records), size, len(data)
        self.saved_seq = after
        self.last_seq = records[-1]["seq"] if pending else after
        return pending

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open for appending: take the directory's writer lock, check that the file is still the
        one that was read, cut off a torn tail and records the saved index already holds."""
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UserError(f"cannot open {self.path} for writing ({exc.strerror}); the index directory must be "
                            f"writable to take changes.") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another process is writing to {self.path.parent}; one server per index "
                                f"directory (stop it, or serve a copy).") from None
            # with the lock held nobody else writes; were the journal or the saved index changed
            # since we read them, writing on from our copy would lose those changes
            if (os.fstat(fd).st_size != self._read_size
                    or ItemIndex.saved_journal_seq(self.path.parent) != self.saved_seq):
                raise UserError(f"{self.path.parent} was changed by another process since this one loaded it; "
                                f"restart to load the current state.")
            if self.last_seq == self.saved_seq:  # a crash between a save and its truncation left these
                self.records = self.size = 0
            if self._read_size != self.size:
                os.ftruncate(fd, self.size)  # a torn tail was never acknowledged
                os.fsync(fd)
            if created:
                fsync_path(self.path.parent)  # the new file's name must survive a crash too
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, record: dict) -> int:
        """Write one record with the next `seq` and fsync it; returns the seq. On an error the file
        is cut back to the records before it."""
        seq = self.last_seq + 1
        line = frame({"seq": seq, **record})
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except BaseException:
            os.ftruncate(self._fd, self.size)
            raise
        self.last_seq, self.records, self.size = seq, self.records + 1, self.size + len(line)
        return seq

    def drop_last(self, size_before: int) -> None:
        """Take back the record `append` just wrote (it could not be applied)."""
        os.ftruncate(self._fd, size_before)
        os.fsync(self._fd)
        self.last_seq, self.records, self.size = self.last_seq - 1, self.records - 1, size_before

    def truncate(self) -> None:
        """Empty the journal once the saved index holds all its records (`last_seq`)."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.saved_seq, self.records, self.size = self.last_seq, 0, 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the flock
            self._fd = None


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

    user_model = None  # a solutions.recsys.sequential model when the index holds its item vectors (load)

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
            except _JournalGap:
                if attempt == 2:
                    raise
        for record in pending:
            try:
                _replay(index, catalog, record)
            except UserError as exc:
                raise UserError(f"{journal.path}: record {record['seq']} ({record['op']} '{record['id']}') does "
                                f"not apply to the saved index: {exc}") from None
            index.journal_seq = record["seq"]
        rec = cls(index, TextEncoder.load(catalog.encoder, catalog.max_length), catalog, journal=journal,
                  compact_every=compact_every, compact_bytes=compact_bytes)
        rec._unarchived = [r for r in pending if r["op"] == "events" and r["seq"] > catalog.journal_seq]
        from solutions.recsys.sequential import has_served_model, load_served_model

        if has_served_model(directory):  # the index of a sequential model: its user vector queries it
            rec.user_model, rec.encoder = load_served_model(directory, rec.encoder)
        return rec

    # ------------------------------------------------------------ reads
    def embed(self, texts: list[str]) -> np.ndarray:
        with self._encode_lock:
            return self.encoder.encode(texts)

    def recommend(self, history: list[str], k: int = 10, where: dict | None = None,
                  exclude_seen: bool = True) -> list[tuple[str, float]]:
        """(item id, score) for a history of item ids, oldest first (recent items weigh more).
        With a sequential model: one search with the model's user vector for the history."""
        query = self.user_model.query_vector(history) if self.user_model is not None else None
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
