"""Alert deliveries off the reading loop: one worker thread with its own store connection.

A webhook that hangs used to hold the monitor's one loop for its whole timeout per attempt, so
reading and scoring slowed to the receiver's pace (the demo stream at 9 documents/s instead of
15-16 with one hanging and one garbage-answering sink). Now the loop only commits alerts with their
pending deliveries (the outbox, as before: nothing acknowledged is lost) and wakes this worker,
which sends what is due through `sinks.deliver_due` (backoff, deferral of a failing sink's queue, any
exception a failed attempt: as before). Something that is not an Exception (KeyboardInterrupt,
SystemExit) ending the thread is raised again in the loop at its next `wake()` or `stop()`. Each attempt is bounded by its sink's timeout (a webhook: 5 s
per socket operation); a slow receiver delays only other deliveries, never ingestion.

The worker opens its own store (SQLite in WAL mode takes the two connections' writes one at a time,
waiting up to its busy timeout; PostgreSQL serves two connections anyway). A store error in the
worker is logged and retried at the next wake-up, never raised into the loop. `stop()` lets an
attempt in flight finish (bounded by the sink's timeout) and joins; the loop then drains what is
left on its own connection, as before (`loop._drain`).
Leaves out: the sinks themselves and the outbox (sinks, store).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from solutions.finance.monitor.sinks import Backoff, deliver_due

log = logging.getLogger("verticals.finance")


class DeliveryWorker:
    """`start()`, `wake()` after each commit that may have created alerts, `stop()` at the end."""

    def __init__(self, open_store: Callable[[], object], sinks: dict, backoff: Backoff, poll_seconds: float = 0.5):
        self.open_store, self.sinks, self.backoff, self.poll_seconds = open_store, sinks, backoff, poll_seconds
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-deliveries", daemon=True)
        self.delivered = self.failed = self.errors = 0
        self.died: BaseException | None = None

    def start(self) -> DeliveryWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._raise_if_died()
        self._wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        self._raise_if_died()

    def _raise_if_died(self) -> None:
        """What killed the thread (not an Exception: those are logged and retried) stops the monitor too."""
        died, self.died = self.died, None
        if died is not None:
            raise died

    def _run(self) -> None:
        store = None
        try:
            while not self._stopping.is_set():
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    store = store or self.open_store()
                    stats = deliver_due(store, self.sinks, self.backoff)
                    self.delivered += stats["delivered"]
                    self.failed += stats["failed"]
                except Exception as exc:  # noqa: BLE001 - a store error here must not stop deliveries for good
                    self.errors += 1
                    log.warning("alert deliveries: %s: %s (retried at the next wake-up)", type(exc).__name__, exc)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which stops on it (wake/stop)
            self.died = exc
        finally:
            if store is not None:
                store.close()
