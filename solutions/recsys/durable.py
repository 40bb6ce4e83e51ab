"""Files that survive a crash: checksummed FAISS reads, and core.foundation.durable's fsync and atomic
replace re-exported for the index's save/load (solutions.recsys.index), the catalog and the write
journal (solutions.recsys.live)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from core.foundation.durable import atomic_write, fsync_path  # noqa: F401 - re-exported


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def read_faiss(path: Path, crc: int | None):
    """The FAISS index in `path` if its CRC-32 is `crc` (None: no check), else None. The bytes
    are read once, so the check and the index are the same file even if it is renamed meanwhile."""
    import faiss

    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        return None
    if crc is not None and zlib.crc32(raw) != crc:
        return None
    return faiss.deserialize_index(raw)
