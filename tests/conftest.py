"""Shared fixtures: the tiny offline backbone, small labelled files, the real data root if present.

Imports `verticals`, as a user's program does, so tests see the readers the solutions add to core."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

# One math-library thread per test process, set before torch loads: under `pytest -n auto`
# (pytest-xdist) every worker has its own core, the CLI tests' subprocesses inherit it, and the tiny
# test models gain nothing from more threads (two workers x two threads each oversubscribe 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

import verticals  # noqa: E402,F401  (installs the solutions' data readers into core.data.catalog.READERS)
from tests.servers import PostgresServer  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Build the tiny backbone in a per-session cache, never in the user's ~/.cache."""
    os.environ["VERTICALS_CACHE"] = str(tmp_path_factory.mktemp("verticals-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


def real_data_root() -> Path | None:
    root = os.environ.get("VERTICALS_DATA")
    return Path(root) if root and (Path(root) / "banking77" / "train.csv").is_file() else None


needs_real_data = pytest.mark.skipif(
    real_data_root() is None,
    reason="real datasets not found: set VERTICALS_DATA to a data root holding banking77/ "
           "and financial_phrasebank/ (CI points it at ../shared/datasets)")

# Two well-separated intents: words no other class uses, so a tiny model can learn them.
CARD = ["my card was declined", "card declined at the shop", "why was my card declined today",
        "the card payment did not go through", "card not working at the atm", "declined card again"]
TRANSFER = ["how long does a transfer take", "my transfer is pending", "transfer to another bank",
            "send money transfer abroad", "the transfer has not arrived", "transfer fee in euros"]


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_toy_splits(folder: Path) -> Path:
    """train/validation/test CSVs of the two intents (CARD, TRANSFER) in `folder`."""
    rows = [(t, "card") for t in CARD] + [(t, "transfer") for t in TRANSFER]
    write_csv(folder / "train.csv", rows * 3)
    write_csv(folder / "validation.csv", rows)
    write_csv(folder / "test.csv", rows)
    return folder


@pytest.fixture
def toy_dir(tmp_path) -> Path:
    """A bring-your-own folder with train/validation/test CSVs of two intents."""
    return write_toy_splits(tmp_path)


@pytest.fixture(scope="session")
def tiny_backbone_dir():
    from core.models.backbones import build_tiny_backbone

    return build_tiny_backbone()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server for the session (tests/servers.py), or a skip that says why not."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[scale]')")
    reason = PostgresServer.missing()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.close()
