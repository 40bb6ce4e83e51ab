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


def crash(rec) -> None:
    """What the kernel does when the process dies: the journal's descriptor (and lock) go away."""
    if rec.journal.is_open:
        os.close(rec.journal._fd)
        rec.journal._fd = None
