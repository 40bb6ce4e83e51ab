"""Recsys fixtures: the demo catalog embedded once with the tiny backbone, and an in-process crash."""

from __future__ import annotations

import os

import pytest

from solutions.recsys.content import TextEncoder, embed_catalog
from solutions.recsys.data import load_interactions


@pytest.fixture(scope="session")
def catalog_vectors(tiny_backbone_dir):
    """(demo data, sorted item ids, their tiny-backbone vectors, the encoder's max_length)."""
    data = load_interactions("demo_catalog")
    items = sorted(data.items)
    encoder = TextEncoder.load("tiny")
    return data, items, embed_catalog(encoder, items, data.items), encoder.max_length


def save_demo_index(directory, catalog_vectors, factory: str, half_life: float):
    """The demo catalog saved as an index (every item in category "demo") with its user histories."""
    from solutions.recsys.catalog import Catalog, rating_range, user_histories
    from solutions.recsys.index import ItemIndex

    data, items, vectors, max_length = catalog_vectors
    ItemIndex.build(items, vectors, factory, {i: {"category": "demo"} for i in items}).save(directory)
    Catalog("tiny", max_length, half_life, user_histories(data), rating_range=rating_range(data)).save(directory)
    return directory


def crash(rec) -> None:
    """What the kernel does when the process dies: the journal's descriptor (and lock) go away."""
    if rec.journal.is_open:
        os.close(rec.journal._fd)
        rec.journal._fd = None
