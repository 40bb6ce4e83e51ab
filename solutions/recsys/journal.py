"""The write journal of an index directory: the append-only, fsync'd change log behind the live
recommender's durable writes (solutions.recsys.live).

- Format (`journal.log` in the index directory): one record a line, `<crc32 of the JSON, 8 hex
  digits> <JSON>\\n` (`frame`, `unframe`). A record holds `seq` (1, 2, 3, ... across the
  directory's life), `op` (add/update/remove/events), `id`, and for add/update the exact vector
  that was applied (`encode_vector`: base64 of little-endian float32) and the metadata, so replay
  needs no encoder and gives the same vectors and metadata. The item text is not kept. The event
  archive (solutions.recsys.events) keeps its records in the same line format.
- Reading (`Journal.read(after)`) writes nothing. Records must be consecutive; a gap after the
  saved index's `journal_seq` (`JournalGap`: the index is older than the journal, or another
  process compacted between our two reads) or a bad record followed by a good one is damage, and
  a UserError. A bad or partial record at the end is the one write that was in flight when the
  process died: appends are serialised and each is fsync'd before the next begins, so nothing
  after the last good record was ever acknowledged, and it is dropped.
- Writing: `open` takes an exclusive `flock` on the journal (freed when the process dies) and
  checks that nobody changed the directory since it was read (either failure is a UserError:
  writing from a stale copy would lose the other writes), then cuts off a torn tail and records
  the saved index already holds; `append` writes one record and fsyncs it; `drop_last` takes back
  a record that could not be applied; `truncate` empties the journal once the index holds it all.
Leaves out: applying records, replay and compaction (live), the event archive (events).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import zlib
from pathlib import Path

import numpy as np

from core.foundation.durable import fsync_path
from core.foundation.errors import UserError
from solutions.recsys.durable import saved_journal_seq

JOURNAL_FILE = "journal.log"


class JournalGap(UserError):
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
            raise JournalGap(f"{self.path} continues at record {pending[0]['seq']} but the saved index holds only "
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
                    or saved_journal_seq(self.path.parent) != self.saved_seq):
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
