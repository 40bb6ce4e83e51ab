"""The cost ledger: what a block of work cost in time, CPU and memory, plus what the caller
fills in (parameters, samples, tokens, and the precision the work computed in: `fp32`, `bf16` or
`fp16` as core.foundation.precision resolved it; empty where the trainer does not record it and
then left out of `to_dict`). Every run report carries one under `cost`.

Money: `Prices` turns core-hours (cpu_seconds / 3600: the CPU time the process used, summed over
cores) and GPU-hours (wall seconds x GPUs held) into dollars. The defaults are ASSUMPTIONS, not
measurements: approximate on-demand list prices of a large US cloud region (about $0.045 per
vCPU-hour, i.e. a 2-vCPU general-purpose instance at ~$0.09/h; about $1.00 per GPU-hour, i.e. a
single-A10G instance). Set your own with VERTICALS_USD_PER_CORE_HOUR / VERTICALS_USD_PER_GPU_HOUR
(or `Prices(...)`); every dollar figure we write carries the prices it used.
`measure_throughput` times a predict function on this machine (batch throughput, single-query
latency, busy cores) and `usd_per_million` prices a million predictions from it.
Leaves out: spot/reserved discounts, storage and network, and the idle cores of a rented machine.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import psutil

from core.foundation.errors import UserError

DEFAULT_USD_PER_CORE_HOUR = 0.045  # assumption: ~on-demand price of one cloud vCPU-hour
DEFAULT_USD_PER_GPU_HOUR = 1.00  # assumption: ~on-demand price of one single-A10G instance-hour


@dataclass(frozen=True)
class Prices:
    usd_per_core_hour: float = DEFAULT_USD_PER_CORE_HOUR
    usd_per_gpu_hour: float = DEFAULT_USD_PER_GPU_HOUR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Prices":
        """The defaults, with VERTICALS_USD_PER_CORE_HOUR / VERTICALS_USD_PER_GPU_HOUR on top."""
        values = {}
        for key, field_name in (("VERTICALS_USD_PER_CORE_HOUR", "usd_per_core_hour"),
                                ("VERTICALS_USD_PER_GPU_HOUR", "usd_per_gpu_hour")):
            if environ.get(key, "").strip():
                try:
                    values[field_name] = float(environ[key])
                except ValueError:
                    values[field_name] = -1.0
                if not values[field_name] >= 0:
                    raise UserError(f"{key}={environ[key]!r} is not a price: give dollars per hour, e.g. 0.045")
        return cls(**values)

    def usd(self, core_hours: float, gpu_hours: float = 0.0) -> float:
        return core_hours * self.usd_per_core_hour + gpu_hours * self.usd_per_gpu_hour


@dataclass
class Cost:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    train_samples: int = 0
    tokens_seen: int = 0
    gpu_seconds: float = 0.0  # wall seconds x GPUs held (the ledger's `gpus`)
    precision: str = ""  # fp32 | bf16 | fp16: what the work computed in; "" = not recorded

    @property
    def train_samples_per_second(self) -> float:
        return self.train_samples / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def core_hours(self) -> float:
        return self.cpu_seconds / 3600

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600

    def usd(self, prices: Prices | None = None) -> float:
        return (prices or Prices.from_env()).usd(self.core_hours, self.gpu_hours)

    def to_dict(self, prices: Prices | None = None) -> dict:
        prices = prices or Prices.from_env()
        out = asdict(self)
        if not self.precision:
            del out["precision"]
        out["train_samples_per_second"] = round(self.train_samples_per_second, 2)
        out["trainable_fraction"] = (self.trainable_params / self.total_params) if self.total_params else 0.0
        out["core_hours"], out["gpu_hours"] = round(self.core_hours, 6), round(self.gpu_hours, 6)
        out["usd"], out["usd_prices"] = round(self.usd(prices), 6), asdict(prices)
        return out


def gpus_held(device: str, processes: int = 1) -> int:
    """GPUs a run on `device` holds: one per process on cuda, none on cpu."""
    return processes if str(device).startswith("cuda") else 0


def usd_per_million(texts_per_second: float, *, cores: float = 1.0, gpus: float = 0.0,
                    prices: Prices | None = None) -> float:
    """Dollars for 1e6 predictions at `texts_per_second` while keeping `cores` CPU cores and `gpus`
    GPUs busy: 1e6 / rate seconds -> hours x (cores x $/core-hour + gpus x $/GPU-hour)."""
    if texts_per_second <= 0:
        raise ValueError(f"texts_per_second must be > 0; got {texts_per_second}")
    hours = 1e6 / texts_per_second / 3600
    return (prices or Prices.from_env()).usd(hours * cores, hours * gpus)


def measure_throughput(predict: Callable[[list[str]], object], texts: list[str], *, batch_size: int = 64,
                       min_seconds: float = 1.0, single_queries: int = 30) -> dict:
    """Time `predict` on this machine: batch texts/s (batches of `batch_size` cycled over `texts`
    for at least `min_seconds`, after one warm-up batch), the busy cores during it (CPU seconds /
    wall seconds), and single-query p50/p99 latency over `single_queries` calls."""
    if not texts:
        raise UserError("no texts to time predictions on")
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    predict(batches[0])
    process = psutil.Process()
    cpu0, wall0, n, i = sum(process.cpu_times()[:2]), time.perf_counter(), 0, 0
    while time.perf_counter() - wall0 < min_seconds or n == 0:
        predict(batches[i % len(batches)])
        n, i = n + len(batches[i % len(batches)]), i + 1
    wall = time.perf_counter() - wall0
    cores = (sum(process.cpu_times()[:2]) - cpu0) / wall
    latencies = []
    for j in range(single_queries):
        t0 = time.perf_counter()
        predict([texts[j % len(texts)]])
        latencies.append(1000 * (time.perf_counter() - t0))
    latencies.sort()
    return {"texts_per_second": n / wall, "busy_cores": max(cores, 0.0), "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "texts": n}


class CostLedger:
    """`with CostLedger() as ledger: ...`; then `ledger.cost`. Peak RSS is sampled every
    `interval` seconds by a daemon thread (the process-lifetime maximum would include earlier work).
    `gpus`: how many GPUs the block holds (its GPU-seconds are wall seconds x gpus)."""

    def __init__(self, interval: float = 0.05, gpus: int = 0):
        self.interval, self.gpus = interval, gpus
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
        self.cost.gpu_seconds = round(self.cost.wall_seconds * self.gpus, 3)
        self.cost.cpu_seconds = round(times.user + times.system - self._cpu0, 3)
        self.cost.peak_rss_mb = round(max(self.cost.peak_rss_mb, self._process.memory_info().rss / 2**20), 1)
