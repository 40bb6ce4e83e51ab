"""A readers-writer lock: many concurrent readers or one writer.

The item index searches in parallel (FAISS releases the GIL during a search) while adds,
removes and rebuilds must run alone (faiss issue 1504). The writer side is re-entrant, so an
update can call remove and add under one lock; a waiting writer blocks new readers, so a steady
stream of searches cannot starve writes.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class ReadWriteLock:
    """Many readers or one (re-entrant) writer; a waiting writer blocks new readers."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    # The read side enters the condition's lock directly (a C call, where `with self._cond` goes
    # through Python) and looks up the thread id only when a writer is involved: it runs once per
    # search, and on a 100k HNSW index a search takes about 120 us.
    def acquire_read(self) -> None:
        with self._mutex:
            if (self._writer is not None or self._writers_waiting) and self._writer != threading.get_ident():
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:  # only writers wait for readers to finish
                self._cond.notify_all()

    @contextmanager
    def read(self):
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._writers_waiting += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._writers_waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()
