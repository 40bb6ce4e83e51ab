"""The cost ledger: what a block of work cost in time, CPU and memory, plus counters the caller
fills in (parameters, samples, tokens). Every run report carries one under `cost`."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

import psutil


@dataclass
class Cost:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    train_samples: int = 0
    tokens_seen: int = 0

    @property
    def train_samples_per_second(self) -> float:
        return self.train_samples / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train_samples_per_second"] = round(self.train_samples_per_second, 2)
        out["trainable_fraction"] = (self.trainable_params / self.total_params) if self.total_params else 0.0
        return out


class CostLedger:
    """`with CostLedger() as ledger: ...`; then `ledger.cost`. Peak RSS is sampled every
    `interval` seconds by a daemon thread (the process-lifetime maximum would include earlier work)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.cost = Cost()
        self._process = psutil.Process()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self._process.memory_info().rss / 2**20
            self.cost.peak_rss_mb = max(self.cost.peak_rss_mb, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "CostLedger":
        times = self._process.cpu_times()
        self._cpu0 = times.user + times.system
        self._wall0 = time.perf_counter()
        self.cost.peak_rss_mb = self._process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        times = self._process.cpu_times()
        self.cost.wall_seconds = round(time.perf_counter() - self._wall0, 3)
        self.cost.cpu_seconds = round(times.user + times.system - self._cpu0, 3)
        self.cost.peak_rss_mb = round(max(self.cost.peak_rss_mb, self._process.memory_info().rss / 2**20), 1)
