"""Where alerts go: stdout, a JSONL file, a webhook. Delivery goes through an outbox in the store.

An alert is written with one pending delivery per configured sink in the same transaction that
creates it (store.commit_alerts). `deliver_due` sends what is due; a failure is recorded with
the error and retried later with exponential backoff (`base * 2^(attempts-1)`, capped), never
dropped; undelivered alerts survive restarts and are retried by the next run. Delivery is
at-least-once: killed between sending and recording, an alert is sent again, so every payload
carries `alert_id` (stable per entity/rule/window) for receivers to de-duplicate on.
Any exception from a sink is a failed attempt, whatever it is (a timeout, a refused or reset
connection, an HTTP error, a reply that is not HTTP at all, a bug in the sink): a receiver can
never crash the monitor. After a failure the rest of that sink's due queue is deferred with the
same backoff (recorded, not counted as attempts), so a dead receiver costs one timeout per retry,
not one per queued alert, and never holds up the other sinks or ingestion.
Sink specs: `stdout`, `jsonl:PATH`, `webhook:URL`.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.foundation.errors import UserError
from solutions.finance.monitor.store import ALERT_SENTENCE_DOCUMENTS


def alert_payload(alert: dict, sentences: list[dict] | None = None) -> dict:
    """The JSON every sink gets. `evidence`: the window's document ids, best first; `evidence_sentences`:
    for the first of them, the entity's label and score in the document and the sentences that drove
    it ({text, start, end, label, score}, offsets into the document's text)."""
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {"alert_id": alert["id"], "entity": alert["entity"], "rule": alert["rule"],
            "window_start": iso(alert["window_start"]), "window_end": iso(alert["window_end"]),
            "value": round(alert["value"], 4), "baseline": round(alert["baseline"], 4),
            "detail": alert["detail"], "evidence": alert["evidence"], "evidence_sentences": sentences or []}


def stored_payload(store, alert_id: int) -> dict:
    """An alert's payload from the store, with the evidence sentences of its first documents."""
    alert = store.alert(alert_id)
    return alert_payload(alert, store.evidence_sentences(alert["entity"], alert["evidence"][:ALERT_SENTENCE_DOCUMENTS]))


class StdoutSink:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def send(self, payload: dict) -> None:
        self.stream.write(json.dumps(payload) + "\n")
        self.stream.flush()


class JsonlSink:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def send(self, payload: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(payload) + "\n")


class WebhookSink:
    """POST the alert as JSON; any non-2xx answer or network error is a failed attempt."""

    def __init__(self, url: str, timeout: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise UserError(f"webhook URL must start with http:// or https://; got {url!r}")
        self.url, self.timeout = url, timeout

    def send(self, payload: dict) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if not 200 <= response.status < 300:
                raise OSError(f"HTTP {response.status}")


def build_sink(spec: str):
    kind, _, target = spec.partition(":")
    if kind == "stdout" and not target:
        return StdoutSink()
    if kind == "jsonl" and target:
        return JsonlSink(Path(target))
    if kind == "webhook" and target:
        return WebhookSink(target)
    raise UserError(f"bad sink {spec!r}; use stdout, jsonl:PATH or webhook:URL")


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0  # seconds before the first retry
    cap: float = 300.0

    def delay(self, attempts: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, attempts - 1))


def deliver_due(store, sinks: dict, backoff: Backoff, now: float | None = None) -> dict:
    """Try the due deliveries of every sink, up to its first failure; returns {"delivered": n, "failed": n}."""
    stats = {"delivered": 0, "failed": 0}
    for spec, sink in sinks.items():
        due = store.due_deliveries(spec, time.time() if now is None else now)
        for i, alert_id in enumerate(due):
            try:
                sink.send(stored_payload(store, alert_id))
            except Exception as exc:  # noqa: BLE001 - whatever a receiver does is a failed attempt
                error = f"{type(exc).__name__}: {exc}"
                retry_at = time.time() + backoff.delay(store.delivery_attempts(alert_id, spec) + 1)
                store.mark_failed(alert_id, spec, error, retry_at)
                store.defer_deliveries(due[i + 1:], spec, f"deferred, sink failing: {error}", retry_at)
                stats["failed"] += 1
                break
            store.mark_delivered(alert_id, spec)
            stats["delivered"] += 1
    return stats
