"""Live drift and health of the served model, off the request path.

The inference thread hands each routed batch (model, embeddings, routes) to `DriftMonitor.offer`,
which only puts it on a bounded queue (a full queue drops the batch and counts it: monitoring
never slows routing). The monitor's own thread drains the queue into a core.evaluation.drift.DriftWindow
(one per model version: a swap starts a fresh window) and, `interval_s` after its last report when
rows arrived (sooner after `every_rows` new rows, but never within `min_interval_s`: a report fits
a classifier, CPU taken from routing), compares the window with the served run's DriftBaseline
(core.evaluation.drift: PSI of confidence, domain-classifier AUC and MMD on embeddings, label shift,
fallback rate). A multi-label run's routes count every intent of their `intents` for the label
shift, as its baseline does (core.evaluation.drift_baseline); its accuracy estimate is "not
available" (ATC is defined for one label per row). The result feeds the Prometheus gauges below (labelled by model_version) and
`GET /v1/drift`; a warning is logged when an alert starts (and an info line when it clears).

    verticals_drift_psi_confidence, verticals_drift_domain_auc, verticals_drift_mmd,
    verticals_drift_label_shift, verticals_fallback_rate, verticals_drift_alert (0/1),
    verticals_drift_window_rows, verticals_drift_dropped_batches_total,
    verticals_accuracy_estimate{method="atc"|"doc"}, verticals_accuracy_estimate_rows,
    verticals_accuracy_validation

The accuracy estimate (core.evaluation.accuracy_estimate: ATC over the window's calibrated
confidences, from the run's stored fit; DoC beside it) is also `accuracy_estimate` in
`GET /v1/drift`, with its method, rows and the validation accuracy it started from; an estimate
more than DriftThresholds.accuracy_drop below the validation accuracy is one of the drift alerts.

Gauges of a version no longer served are removed, so /metrics stays bounded across swaps.
The fallback rate (since the version started serving, then over the window once it holds its
minimum rows) and the window size are set for every version; the drift scores once the window
holds its minimum rows and the run has a baseline (runs trained before baselines were saved
report counts only).
Leaves out: the metric maths (core.evaluation.drift) and the offline report from the prediction log
(solutions.support.drift_report).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from core.evaluation.drift import DriftThresholds, DriftWindow, preload
from solutions.support.router import LABEL_KEY, MULTI_LABEL_KEY

log = logging.getLogger("verticals.support.drift")

GAUGES = {  # key in the drift report -> (metric name, help)
    "psi_confidence": ("verticals_drift_psi_confidence", "PSI of the top-class confidence, recent vs training baseline"),
    "domain_auc": ("verticals_drift_domain_auc",
                   "AUC of a classifier telling recent embeddings from the baseline's (0.5: no drift)"),
    "mmd": ("verticals_drift_mmd", "RBF-kernel MMD between recent and baseline embeddings"),
    "label_shift": ("verticals_drift_label_shift",
                    "Total variation distance of the predicted-label mix from the baseline's"),
    "fallback_rate": ("verticals_fallback_rate", "Share of recent routes handed over to a human"),
    "alert": ("verticals_drift_alert", "1 while any drift threshold is passed"),
    "n": ("verticals_drift_window_rows", "Routed texts in the drift window"),
    "accuracy_rows": ("verticals_accuracy_estimate_rows", "Routed texts the accuracy estimate is based on"),
    "accuracy_validation": ("verticals_accuracy_validation",
                            "Validation accuracy of the served run, where the accuracy estimate starts from"),
}
ESTIMATES = {"atc": "estimate", "doc": "doc_estimate"}  # method label -> key in the report's accuracy_estimate


def _plain(value):
    """numpy scalars and arrays as JSON values (the report's numbers come from numpy)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


@dataclass(frozen=True)
class MonitorSettings:
    interval_s: float = 30.0  # recompute this long after the last report when rows arrived...
    every_rows: int = 500  # ...or sooner, once this many new rows arrived,
    min_interval_s: float = 15.0  # but never more often: a report fits a classifier, ~0.4 s of CPU taken from routing
    queue_batches: int = 1000  # batches waiting for the monitor thread before new ones are dropped
    window_rows: int = 2000  # recent routed texts compared with the baseline
    min_rows: int = 200  # fewer: no drift scores yet (sampling noise; see core.evaluation.drift)
    thresholds: DriftThresholds = DriftThresholds()  # alert levels, e.g. DriftThresholds(accuracy_drop=0.03)


class DriftMonitor:
    """See the module docstring. `registry`: the app's prometheus CollectorRegistry."""

    def __init__(self, registry, settings: MonitorSettings = MonitorSettings(), thresholds=None):
        self.settings, self.thresholds = settings, thresholds or settings.thresholds
        self.gauges = {key: Gauge(name, doc, ["model_version"], registry=registry) for key, (name, doc) in GAUGES.items()}
        self.accuracy = Gauge("verticals_accuracy_estimate", "Accuracy estimated without labels over the drift "
                              "window (ATC: share of confidences above the validation-fitted threshold; DoC)",
                              ["model_version", "method"], registry=registry)
        self.dropped = Counter("verticals_drift_dropped_batches_total", "Routed batches the drift monitor had no room for",
                               registry=registry)
        self.queue: queue.Queue = queue.Queue(maxsize=settings.queue_batches)
        self.latest: dict = {"model_version": None, "status": "no traffic yet", "n": 0, "report": None}
        self._served = None  # the ServedModel whose window this is
        self._window = None
        self._fallbacks = self._rows = self._since_report = 0
        self._last_report = 0.0
        self._alerting = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the inference thread's side
    def offer(self, served, embeddings, rows: list[dict]) -> None:
        try:
            self.queue.put_nowait((served, embeddings, rows))
        except queue.Full:
            self.dropped.inc()

    # ------------------------------------------------------------ the monitor thread
    def start(self) -> None:
        preload()  # before traffic: a first report's imports would stall routing (core.evaluation.drift.preload)
        self._thread = threading.Thread(target=self._loop, name="drift-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.queue.put_nowait(None)  # wake the thread now rather than at its next timeout
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self.queue.get(timeout=min(1.0, self.settings.interval_s))
            except queue.Empty:
                item = None
            try:
                while item is not None and not self._stop.is_set():
                    self._add(*item)
                    item = self.queue.get_nowait() if not self.queue.empty() else None
                if not self._stop.is_set() and self._due():
                    self._report()
            except Exception:  # a bug in monitoring must never reach requests: log it, keep serving
                log.exception("drift monitor: unexpected error; monitoring continues with the next batch")

    def _add(self, served, embeddings, rows: list[dict]) -> None:
        if self._served is None or served.version != self._served.version:
            if self._served is not None:
                for gauge in self.gauges.values():
                    try:
                        gauge.remove(self._served.version)
                    except KeyError:
                        pass
                for method in ESTIMATES:
                    try:
                        self.accuracy.remove(self._served.version, method)
                    except KeyError:
                        pass
            self._window = DriftWindow(served.version, size=self.settings.window_rows, min_rows=self.settings.min_rows)
            self._served, self._alerting = served, False
            self._fallbacks = self._rows = self._since_report = 0
            self._last_report = 0.0
        if all("confidence" in r for r in rows):  # a custom route function may return other rows
            self._window.add(embeddings, rows, label_key=LABEL_KEY, label_set_key=MULTI_LABEL_KEY)
        self._rows += len(rows)
        self._since_report += len(rows)
        self._fallbacks += sum(1 for r in rows if r.get("fallback_reason"))

    def _due(self) -> bool:
        if self._served is None or self._since_report == 0:
            return False
        elapsed = time.monotonic() - self._last_report
        return elapsed >= self.settings.interval_s or (
            self._since_report >= self.settings.every_rows and elapsed >= self.settings.min_interval_s)

    def _report(self) -> None:
        served, version = self._served, self._served.version
        self._since_report, self._last_report = 0, time.monotonic()
        report = served.baseline and self._window.report(served.baseline, self.thresholds)
        n = self._window.n
        fallback_rate = report["fallback_rate"] if report else self._fallbacks / max(self._rows, 1)
        self.gauges["n"].labels(version).set(n)
        self.gauges["fallback_rate"].labels(version).set(fallback_rate)
        if served.baseline is None:
            status = "no drift baseline in this run (trained before baselines were saved): counts only"
        elif report is None:
            status = "collecting: too few routed texts for drift scores yet"
        else:
            status = "drifted" if report["drifted"] else "ok"
            for key in ("psi_confidence", "domain_auc", "mmd", "label_shift"):
                if report.get(key) is not None:
                    self.gauges[key].labels(version).set(report[key])
            self.gauges["alert"].labels(version).set(1 if report["drifted"] else 0)
            self._set_accuracy(version, report["accuracy_estimate"])
            self._log_transition(version, report)
        accuracy = report["accuracy_estimate"] if report else {
            "estimate": None, "rows": n, "alert": False,
            "status": f"not available: {status}" if served.baseline is None else "not available yet: " + status}
        latest = {"model_version": version, "status": status, "n": n, "fallback_rate": fallback_rate,
                  "computed_at": time.time(), "accuracy_estimate": accuracy, "report": report}
        self.latest = json.loads(json.dumps(latest, default=_plain))  # plain JSON for GET /v1/drift

    def _set_accuracy(self, version: str, estimate: dict) -> None:
        if estimate.get("estimate") is None:
            return
        for method, key in ESTIMATES.items():
            self.accuracy.labels(version, method).set(estimate[key])
        self.gauges["accuracy_rows"].labels(version).set(estimate["rows"])
        self.gauges["accuracy_validation"].labels(version).set(estimate["validation_accuracy"])

    def _log_transition(self, version: str, report: dict) -> None:
        if report["drifted"] and not self._alerting:
            details = ", ".join(f"{name}={report['accuracy_estimate']['estimate']:.3f} (validation "
                                f"{report['accuracy_estimate']['validation_accuracy']:.3f})"
                                if name == "accuracy_estimate" else f"{name}={report.get(name)}"
                                for name in report["alerts"])
            log.warning("drift alert for model %s over the last %d routed texts: %s", version, report["n"], details)
        elif self._alerting and not report["drifted"]:
            log.info("drift alert for model %s cleared", version)
        self._alerting = bool(report["drifted"])
