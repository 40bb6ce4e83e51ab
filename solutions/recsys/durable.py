"""The item index's files on disk, saved so that a crash leaves the old save or the new, never a mix.

- Layout: `index.faiss` (faiss.write_index) and `index.json` (the state the ItemIndex hands
  over: config, id map, tombstones, metadata, `journal_seq`), to which `write_index_files` adds
  the CRC-32 of the FAISS file it belongs to.
- Save (`write_index_files`): two files cannot be replaced in one atomic step, so the FAISS file
  is first written (temp file, fsync, rename: core.foundation.durable.atomic_write) as
  `index.faiss.pending`, then `index.json` is replaced, then the pending file is renamed to
  `index.faiss`, then the directory is fsync'd.
- Load (`read_index_files`): whichever of the two FAISS files matches the JSON's CRC, so a crash
  at any point reads back a whole save. Saves from before the CRC existed load by the old rule:
  the id map must have `ntotal` labels (checked for every save). The FAISS bytes are read once,
  so the check and the index are the same file even if it is renamed meanwhile.
Leaves out: what the state means (solutions.recsys.index) and the write journal (journal).
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

from core.foundation.durable import atomic_write, fsync_path
from core.foundation.errors import UserError

INDEX_FILE, MAP_FILE = "index.faiss", "index.json"
PENDING_FILE = INDEX_FILE + ".pending"  # a new FAISS file whose index.json may already be in place


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def read_faiss(path: Path, crc: int | None):
    """The FAISS index in `path` if its CRC-32 is `crc` (None: no check), else None."""
    import faiss  # lazy: native code (OpenMP), loaded at the first index operation

    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        return None
    if crc is not None and zlib.crc32(raw) != crc:
        return None
    return faiss.deserialize_index(raw)


def write_index_files(directory: Path, faiss_index, state: dict) -> None:
    """Save `faiss_index` and `state` (JSON-able, plus `faiss_crc32`) into `directory` (module docstring)."""
    import faiss  # lazy: as in read_faiss

    atomic_write(directory / PENDING_FILE, lambda tmp: faiss.write_index(faiss_index, tmp))
    state = {**state, "faiss_crc32": file_crc(directory / PENDING_FILE)}
    atomic_write(directory / MAP_FILE, lambda tmp: Path(tmp).write_text(json.dumps(state)))
    os.replace(directory / PENDING_FILE, directory / INDEX_FILE)
    fsync_path(directory)


def saved_journal_seq(directory: str | os.PathLike) -> int:
    """The `journal_seq` of the index saved in `directory` (0 if it has none), without loading it."""
    return json.loads((Path(directory) / MAP_FILE).read_text()).get("journal_seq", 0)


def read_index_files(directory: Path) -> tuple[dict, object]:
    """The saved state and the FAISS index that belongs to it (module docstring); a UserError
    naming the fix when the directory holds no index or its files do not agree."""
    has_faiss = any((directory / name).is_file() for name in (INDEX_FILE, PENDING_FILE))
    if not (directory / MAP_FILE).is_file() or not has_faiss:
        raise UserError(f"{directory} is not a saved item index (needs {INDEX_FILE} and {MAP_FILE}); "
                        f"build one with `verticals recsys index`.")
    state, raw = _matching_files(directory)
    if len(state["labels"]) != raw.ntotal:
        raise UserError(f"{directory}: the id map has {len(state['labels'])} ids but the FAISS index "
                        f"holds {raw.ntotal} vectors; the save was interrupted or the files come "
                        f"from different saves. Rebuild the index.")
    return state, raw


def _matching_files(directory: Path) -> tuple[dict, object]:
    """index.json and the FAISS file whose CRC it names. Another process may be saving into the
    directory meanwhile: a CRC that matches neither file means the JSON was replaced under us, so
    read it again (twice at most)."""
    for _ in range(3):
        state = json.loads((directory / MAP_FILE).read_text())
        crc = state.get("faiss_crc32")
        # index.faiss, else a pending file the crashed (or running) save had not renamed yet,
        # else index.faiss again: the rename may have happened between the two reads
        for name in (INDEX_FILE, PENDING_FILE, INDEX_FILE):
            raw = read_faiss(directory / name, crc)
            if raw is not None:
                return state, raw
        if crc is None:
            break
    raise UserError(f"{directory}: no FAISS file matches {MAP_FILE} (checksum {crc}); the files come from "
                    f"different saves or were damaged. Rebuild the index with `verticals recsys index`.")
