import time

import numpy as np

from core.foundation.cost import Cost, CostLedger


def test_ledger_measures_wall_cpu_and_peak_memory():
    with CostLedger(interval=0.01) as ledger:
        block = np.ones((64, 2**20), dtype=np.uint8)  # 64 MiB, touched
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        del block
    cost = ledger.cost
    assert cost.wall_seconds >= 0.2 and cost.cpu_seconds >= 0.15
    assert cost.peak_rss_mb >= 64


def test_cost_rates_and_fraction():
    cost = Cost(wall_seconds=2.0, trainable_params=5, total_params=100, train_samples=50)
    out = cost.to_dict()
    assert out["train_samples_per_second"] == 25.0 and out["trainable_fraction"] == 0.05
    assert Cost().to_dict()["train_samples_per_second"] == 0.0


def test_money_from_core_hours_and_gpu_hours():
    from core.foundation.cost import Prices

    cost = Cost(cpu_seconds=7200, gpu_seconds=1800)
    prices = Prices(usd_per_core_hour=0.05, usd_per_gpu_hour=2.0)
    assert cost.core_hours == 2.0 and cost.gpu_hours == 0.5
    assert abs(cost.usd(prices) - (2 * 0.05 + 0.5 * 2.0)) < 1e-12
    out = cost.to_dict(prices)
    assert out["core_hours"] == 2.0 and out["gpu_hours"] == 0.5 and abs(out["usd"] - 1.1) < 1e-9
    assert out["usd_prices"] == {"usd_per_core_hour": 0.05, "usd_per_gpu_hour": 2.0}


def test_prices_come_from_the_environment_and_bad_ones_are_refused():
    import pytest

    from core.foundation.cost import DEFAULT_USD_PER_GPU_HOUR, Prices
    from core.foundation.errors import UserError

    prices = Prices.from_env({"VERTICALS_USD_PER_CORE_HOUR": "0.1"})
    assert prices.usd_per_core_hour == 0.1 and prices.usd_per_gpu_hour == DEFAULT_USD_PER_GPU_HOUR
    for bad in ("cheap", "-1", "nan"):
        with pytest.raises(UserError, match="not a price"):
            Prices.from_env({"VERTICALS_USD_PER_GPU_HOUR": bad})


def test_usd_per_million_predictions():
    from core.foundation.cost import Prices, usd_per_million

    # 1e6 / 1000 texts/s = 1000 s = 1/3.6 h, on 2 cores at $0.036 -> 2 * 0.036 / 3.6 = $0.02
    assert abs(usd_per_million(1000, cores=2, prices=Prices(0.036, 1.0)) - 0.02) < 1e-12
    assert abs(usd_per_million(3600, cores=0, gpus=1, prices=Prices(0.036, 1.0)) - 1e6 / 3600 / 3600) < 1e-12


def test_gpu_seconds_follow_the_gpus_held():
    from core.foundation.cost import gpus_held

    assert gpus_held("cuda", 2) == 2 and gpus_held("cuda:0") == 1 and gpus_held("cpu", 4) == 0
    with CostLedger(interval=0.01, gpus=2) as ledger:
        time.sleep(0.05)
    assert ledger.cost.gpu_seconds == round(ledger.cost.wall_seconds * 2, 3) > 0


def test_throughput_of_a_predictor_that_sleeps():
    from core.foundation.cost import measure_throughput

    speed = measure_throughput(lambda batch: time.sleep(0.002 * len(batch)), ["a"] * 40, batch_size=10,
                               min_seconds=0.2, single_queries=5)
    assert 250 < speed["texts_per_second"] <= 500  # 2 ms a text, at most 500/s
    assert speed["busy_cores"] < 0.5 and 2 <= speed["p50_ms"] < 20
