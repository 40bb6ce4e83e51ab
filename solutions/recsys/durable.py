"""Files that survive a crash: fsync, atomic replace, and checksummed FAISS reads.

Used by the index's save/load (solutions.recsys.index), the catalog and the write journal
(solutions.recsys.live). Plain os/zlib: the standard library has the pieces but no atomic,
durable "replace this file" in one call.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path

import numpy as np


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's: the names in it) contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` a temp file next to `path`, fsync it, rename it over `path`, fsync the
    directory: after a crash `path` holds the old contents or the new, durably."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        fsync_path(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


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
