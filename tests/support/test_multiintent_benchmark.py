"""benchmarks/support_multiintent.py: composed queries keep their intents apart, and --quick runs."""

import json
import time

import numpy as np

from benchmarks.support_multiintent import compose, main
from core.data.splits import Split


def test_composed_queries_join_distinct_intents_from_the_given_split():
    split = Split(["Where is my card?", "I want a refund.", "Cancel the transfer"], ["card", "refund", "transfer"])
    rows = compose(split, 30, np.random.default_rng(0))
    for text, labels in rows:
        names = labels.split("|")
        assert len(names) in (2, 3) and len(set(names)) == len(names)
        assert all(t.rstrip(".").lower()[:10] in text.lower() for t, lab in zip(split.texts, split.labels) if lab in names)
    assert {len(lab.split("|")) for _, lab in rows} == {2, 3}


def test_quick_mode_runs_in_under_a_minute_and_writes_its_record_outside_results(tmp_path):
    start = time.perf_counter()
    record = main(["--quick", "--out-root", str(tmp_path)])
    assert time.perf_counter() - start < 90  # about 25 s on 2 shared cores
    saved = json.loads((tmp_path / "record.json").read_text())
    assert saved["source"] == "demo_support" and set(saved["results"]) == set(record["results"])
    multi = saved["results"]["support/intent-multilabel"][0]
    assert {"exact_set_accuracy", "micro_f1", "macro_f1"} <= set(multi["multi_test"])
    assert {"top1_accuracy", "exact_set_accuracy"} <= set(multi["single_test"])
