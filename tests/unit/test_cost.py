import time

import numpy as np

from core.cost import Cost, CostLedger


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
