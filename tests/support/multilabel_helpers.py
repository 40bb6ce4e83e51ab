"""Toy multi-intent data for the multi-label tests: the two intents of tests.conftest, and rows with both."""

import csv
from pathlib import Path

from tests.conftest import CARD, TRANSFER

BOTH = [f"{a} and {b}" for a, b in zip(CARD, TRANSFER)]


def write_multilabel_splits(folder: Path) -> Path:
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER] + [(t, "card|transfer") for t in BOTH]
    for name, copies in (("train", 3), ("validation", 2), ("test", 1)):
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("text", "labels"))
            writer.writerows(rows * copies)
    return folder
