"""The item index: a FAISS index that owns its ids, with exclusions, filters, updates and persistence.

- Index type from a FAISS factory string: `Flat` (exact), `HNSW32` (graph), `IVF1024,PQ32`
  (inverted lists + product quantisation; needs `train()` on representative vectors first).
- Cosine similarity = L2-normalise every vector + inner product (`METRIC_INNER_PRODUCT`).
- Callers only see external string ids. Each add gets a fresh int64 label (never reused); the
  id map is label -> id. IVF stores the labels itself (`add_with_ids`); Flat and HNSW keep rows
  in insertion order and we map row -> label (an `IndexIDMap` would do the same, but its
  result translation opens an OpenMP region per call, which made single queries 25x slower on a
  busy 2-core machine). FAISS row numbers never leave this module.
- Exclusions (a user's seen items) and metadata filters (`{"category": "toys"}`, or a value
  contained in a list field such as genres) are applied after the search by over-fetching:
  ask FAISS for more neighbours (k + exclusions, doubling) until k survivors or the whole index.
- Removal. Flat and IVF delete in place (`remove_ids`). **HNSW cannot delete in place** (the
  graph has no delete; faiss issues 3339, 1784): `remove` marks the label as a tombstone, which
  search filters out, and the graph still holds the vector. When tombstones exceed
  `rebuild_fraction` of the stored vectors (default 0.2) the index rebuilds itself from the live
  vectors (`rebuild()` does it on demand; HNSW's flat storage gives the exact vectors back).
  An update is remove + add, so frequently updated HNSW indexes rebuild from time to time.
- Concurrency: searches run in parallel (FAISS releases the GIL); add/remove/update/rebuild
  take a write lock that waits for running searches and blocks new ones (faiss issue 1504: a
  search concurrent with an add is unsafe). The write lock is re-entrant (update = remove + add).
- Persistence: `save(dir)` / `load(dir)` through solutions.recsys.durable (two files, replaced so
  that a crash leaves the old save or the new). A save takes the read lock: searches go on, writes wait.
- `journal_seq` is the last journal record folded into this index; the index never changes it
  itself: the owner of a journal (solutions.recsys.live) sets it before a save.
Leaves out: embedding (solutions.recsys.content) and ranking policy (what counts as seen).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from core.foundation.errors import UserError
from solutions.recsys.durable import read_index_files, write_index_files
from solutions.recsys.hits import Hits, matches, padded_hits
from solutions.recsys.locks import ReadWriteLock

FORMAT_VERSION = 1
FACTORIES = {"flat": "Flat", "hnsw": "HNSW32", "ivfpq": "IVF1024,PQ32"}  # CLI shorthands


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new float32 C-contiguous array (a 1-d vector -> 1 row)."""
    import faiss  # lazy: native code (OpenMP), loaded at the first index operation

    x = np.array(vectors, dtype=np.float32, order="C", ndmin=2)  # always a copy: inputs stay untouched
    if x.ndim == 2 and x.shape[1]:
        faiss.normalize_L2(x)  # in place, in C: 1 us for one query against 4.5 us for NumPy (zero rows stay zero)
    return x


class ItemIndex:
    """FAISS index + external string ids + metadata. See the module docstring for the rules."""

    def __init__(self, dim: int, factory: str = "Flat", *, ef_search: int = 64, nprobe: int = 16,
                 rebuild_fraction: float = 0.2):
        self.dim, self.factory = int(dim), FACTORIES.get(factory.lower(), factory)
        self.ef_search, self.nprobe, self.rebuild_fraction = ef_search, nprobe, rebuild_fraction
        self.index = self._new_faiss_index()
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}  # every stored label, tombstoned ones included
        self._tombstones: set[int] = set()
        self.metadata: dict[str, dict] = {}
        self._next_label = 0
        self.journal_seq = 0  # the last journal record this index contains (see the module docstring)
        self._lookup: np.ndarray | None = None  # label -> id (object array), rebuilt lazily
        self._hit_ids: np.ndarray | None = None  # what FAISS returns (row or label) -> id, rebuilt lazily
        # row -> label for Flat/HNSW (rows in insertion order, so labels ascend); None for IVF
        self._rows: np.ndarray | None = None if self._native_ids else np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------ construction
    @property
    def in_place_delete(self) -> bool:
        return "HNSW" not in self.factory.upper()

    @property
    def _native_ids(self) -> bool:
        import faiss  # lazy: as in normalize

        return faiss.try_extract_index_ivf(self.index) is not None

    def _new_faiss_index(self):
        import faiss  # lazy: as in normalize

        try:
            base = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise UserError(f"bad index factory string '{self.factory}': {str(exc).splitlines()[-1]}. "
                            f"Try Flat, HNSW32 or IVF1024,PQ32 (or {', '.join(FACTORIES)}).") from None
        self._apply_search_params(base)
        if faiss.try_extract_index_ivf(base) is not None:
            # a hashtable direct map lets `vector()` reconstruct by label and survives remove_ids
            faiss.extract_index_ivf(base).set_direct_map_type(faiss.DirectMap.Hashtable)
        return base

    def _apply_search_params(self, index) -> None:
        import faiss  # lazy: as in normalize

        params = faiss.ParameterSpace()
        if "HNSW" in self.factory.upper():
            params.set_index_parameter(index, "efSearch", self.ef_search)
        if faiss.try_extract_index_ivf(index) is not None:
            params.set_index_parameter(index, "nprobe", self.nprobe)

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Trade recall for speed on the live index (HNSW beam width, IVF lists probed); saved with it."""
        with self._lock.write():
            self.ef_search = ef_search if ef_search is not None else self.ef_search
            self.nprobe = nprobe if nprobe is not None else self.nprobe
            self._apply_search_params(self.index)

    @classmethod
    def build(cls, ids: list[str], vectors: np.ndarray, factory: str = "Flat",
              metadata: dict[str, dict] | None = None, **options) -> "ItemIndex":
        index = cls(np.asarray(vectors).shape[1], factory, **options)
        if not index.index.is_trained:
            index.train(vectors)
        index.add(ids, vectors, metadata)
        return index

    def train(self, vectors: np.ndarray) -> None:
        """IVF/PQ indexes learn their centroids/codebooks from these vectors (before any add)."""
        x = normalize(vectors)
        with self._lock.write():
            try:
                self.index.train(x)
            except RuntimeError as exc:
                raise UserError(f"could not train '{self.factory}' on {len(x)} vectors: "
                                f"{str(exc).splitlines()[-1]}. Give more training vectors or a "
                                f"smaller IVF (e.g. IVF64,PQ16).") from None

    # ------------------------------------------------------------ size and lookup
    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._label_of

    @property
    def ids(self) -> list[str]:
        return list(self._label_of)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def vector(self, item_id: str) -> np.ndarray:
        """The stored vector (exact for Flat/HNSW, decoded for PQ)."""
        with self._lock.read():
            if item_id not in self._label_of:
                raise UserError(f"unknown item id '{item_id}'")
            label = self._label_of[item_id]
            row = label if self._rows is None else int(np.searchsorted(self._rows, label))
            return self.index.reconstruct(row)

    # ------------------------------------------------------------ writes
    def add(self, ids: list[str], vectors: np.ndarray, metadata: dict[str, dict] | None = None) -> None:
        ids = [str(i) for i in ids]
        x = normalize(vectors)
        if x.shape != (len(ids), self.dim):
            raise UserError(f"expected {len(ids)} vectors of dimension {self.dim}, got shape {x.shape}")
        if len(set(ids)) != len(ids):
            raise UserError("duplicate ids in one add; each id may appear once")
        with self._lock.write():
            present = [i for i in ids if i in self._label_of]
            if present:
                raise UserError(f"id(s) already in the index: {', '.join(present[:5])}; use update")
            if not self.index.is_trained:
                raise UserError(f"index '{self.factory}' is not trained; call train() with sample vectors first")
            labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
            if self._rows is None:
                self.index.add_with_ids(x, labels)
            else:
                self.index.add(x)
                self._rows = np.concatenate([self._rows, labels])
            self._next_label += len(ids)
            for item_id, label in zip(ids, labels.tolist()):
                self._label_of[item_id], self._id_of[label] = label, item_id
                if metadata and item_id in metadata:
                    self.metadata[item_id] = dict(metadata[item_id])
            self._lookup = self._hit_ids = None

    def remove(self, ids: list[str]) -> None:
        """Drop ids (unknown ids raise). HNSW: tombstones, auto-rebuild past `rebuild_fraction`."""
        ids = [str(i) for i in ids]
        with self._lock.write():
            missing = [i for i in ids if i not in self._label_of]
            if missing:
                raise UserError(f"unknown item id(s): {', '.join(missing[:5])}")
            labels = [self._label_of.pop(i) for i in ids]
            for item_id in ids:
                self.metadata.pop(item_id, None)
            if self.in_place_delete:
                if self._rows is None:
                    self.index.remove_ids(np.asarray(labels, dtype=np.int64))
                else:  # IndexFlat.remove_ids compacts rows keeping their order; so do we
                    rows = np.searchsorted(self._rows, np.asarray(labels, dtype=np.int64))
                    self.index.remove_ids(rows.astype(np.int64))
                    self._rows = np.delete(self._rows, rows)
                for label in labels:
                    self._id_of.pop(label)
            else:
                self._tombstones.update(labels)
            self._lookup = self._hit_ids = None
            if self._tombstones and len(self._tombstones) > self.rebuild_fraction * max(1, self.index.ntotal):
                self.rebuild()

    def update(self, item_id: str, vector: np.ndarray, metadata: dict | None = None) -> None:
        """Replace an item's vector (and metadata, if given) under one write lock."""
        with self._lock.write():
            old_meta = self.metadata.get(item_id)
            self.remove([item_id])
            new_meta = metadata if metadata is not None else old_meta
            self.add([item_id], vector, {item_id: new_meta} if new_meta is not None else None)

    def rebuild(self) -> None:
        """Re-create the FAISS index from the live vectors, dropping tombstones (labels are kept).
        Only tombstoning (HNSW) indexes need it; Flat and IVF delete in place, so it is a no-op."""
        if self.in_place_delete:
            return
        with self._lock.write():
            live = ~np.isin(self._rows, np.fromiter(self._tombstones, dtype=np.int64))
            vectors = self.index.reconstruct_n(0, self.index.ntotal)[live]
            fresh = self._new_faiss_index()
            fresh.add(vectors)
            self.index, self._rows = fresh, self._rows[live]
            labels = self._rows
            self._id_of = {int(label): self._id_of[int(label)] for label in labels}
            self._tombstones.clear()
            self._lookup = self._hit_ids = None

    # ------------------------------------------------------------ search
    def _label_lookup(self) -> np.ndarray:
        lookup = self._lookup
        if lookup is None:
            lookup = np.full(self._next_label + 1, None, dtype=object)
            for label, item_id in self._id_of.items():
                if label not in self._tombstones:
                    lookup[label] = item_id
            self._lookup = lookup
        return lookup

    def _hit_lookup(self) -> np.ndarray:
        """What FAISS returns (a row for Flat/HNSW, a label for IVF) -> id, in one array, so the
        unfiltered hot path maps results with a single fancy index."""
        hit_ids = self._hit_ids
        if hit_ids is None:
            lookup = self._label_lookup()
            hit_ids = lookup if self._rows is None else lookup[self._rows]
            self._hit_ids = hit_ids
        return hit_ids

    def search(self, queries: np.ndarray, k: int = 10, *, exclude: list[set[str]] | set[str] | None = None,
               where: dict | None = None) -> Hits:
        """Top-k live items for each query vector. `exclude`: one set of ids for all queries, or
        one set per query; `where`: a metadata filter (see `matches`)."""
        q = normalize(queries)
        if q.shape[1] != self.dim:
            raise UserError(f"query dimension {q.shape[1]} does not match the index ({self.dim})")
        if k < 1:
            raise UserError("k must be at least 1")
        if exclude is None and where is None:
            self._lock.acquire_read()  # explicit acquire/release: this is the per-query hot path
            try:
                if not self._tombstones and k <= self.index.ntotal:
                    # the common case: a full result, no padding or -1 labels expected
                    scores, found = self._raw_search(q, k)
                    if found[:, -1].min() >= 0:  # FAISS puts missing hits (-1) last
                        return Hits(self._hit_lookup()[found], scores)
            finally:
                self._lock.release_read()
        per_query = [exclude] * len(q) if isinstance(exclude, (set, frozenset)) else exclude or None
        if per_query is not None and len(per_query) != len(q):
            raise UserError(f"{len(per_query)} exclusion sets for {len(q)} queries")
        with self._lock.read():
            ntotal, lookup = self.index.ntotal, self._label_lookup()
            if not self._tombstones and per_query is None and where is None:
                scores, labels = self._faiss_search(q, min(k, max(ntotal, 1)))
                return padded_hits(lookup[np.where(labels < 0, len(lookup) - 1, labels)], scores, k)
            return self._search_filtered(q, k, per_query, where, lookup, ntotal)

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's search_c on our own float32 C-contiguous copy of the queries: the Python
        `index.search` re-checks and re-copies what `normalize` already guarantees, which was a
        third of the wrapper's cost per single query."""
        import faiss  # lazy: as in normalize

        scores = np.empty((len(q), k), dtype=np.float32)
        found = np.empty((len(q), k), dtype=np.int64)
        self.index.search_c(len(q), faiss.swig_ptr(q), k, faiss.swig_ptr(scores), faiss.swig_ptr(found))
        return scores, found

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, found = self._raw_search(q, k)
        if self._rows is None or not len(self._rows):
            return scores, found
        return scores, np.where(found < 0, -1, self._rows[np.maximum(found, 0)])

    def _search_filtered(self, q, k, per_query, where, lookup, ntotal) -> Hits:
        ids = np.full((len(q), k), None, dtype=object)
        out = np.full((len(q), k), -np.inf, dtype=np.float32)
        todo = np.arange(len(q))
        extra = max((len(s) for s in per_query), default=0) if per_query else 0
        fetch = min(ntotal, 2 * k + extra + (len(self._tombstones) if where is None else 4 * k))
        while len(todo) and ntotal:
            scores, labels = self._faiss_search(q[todo], fetch)
            unfinished = []
            for row, qi in enumerate(todo):
                skip = per_query[qi] if per_query else ()
                found = 0
                for label, score in zip(labels[row], scores[row]):
                    if label < 0:
                        continue
                    item_id = lookup[label]
                    if item_id is None or item_id in skip or (where and not matches(self.metadata.get(item_id), where)):
                        continue
                    ids[qi, found], out[qi, found] = item_id, score
                    found += 1
                    if found == k:
                        break
                if found < k and fetch < ntotal:
                    unfinished.append(qi)
            todo, fetch = np.asarray(unfinished, dtype=np.int64), min(ntotal, fetch * 4)
        return Hits(ids, out)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # a save only reads the index: searches go on, writes wait; saves run one at a time
        # (they share the pending file name)
        with self._save_lock, self._lock.read():
            state = {"format_version": FORMAT_VERSION, "dim": self.dim, "factory": self.factory,
                     "metric": "cosine", "ef_search": self.ef_search, "nprobe": self.nprobe,
                     "rebuild_fraction": self.rebuild_fraction, "next_label": self._next_label,
                     "ntotal": int(self.index.ntotal), "journal_seq": self.journal_seq,
                     # [label, id] pairs; for Flat/HNSW in FAISS row order
                     "labels": [[int(label), self._id_of[int(label)]] for label in
                                (self._rows if self._rows is not None else self._id_of)],
                     "tombstones": sorted(self._tombstones), "metadata": self.metadata}
            write_index_files(directory, self.index, state)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ItemIndex":
        state, raw = read_index_files(Path(directory))
        index = cls(state["dim"], state["factory"], ef_search=state["ef_search"], nprobe=state["nprobe"],
                    rebuild_fraction=state["rebuild_fraction"])
        index.index = raw
        index._apply_search_params(raw)
        index._id_of = {int(label): item_id for label, item_id in state["labels"]}
        if index._rows is not None:
            index._rows = np.asarray([label for label, _ in state["labels"]], dtype=np.int64)
        index._tombstones = set(state["tombstones"])
        index._label_of = {item_id: label for label, item_id in index._id_of.items()
                           if label not in index._tombstones}
        index.metadata = state["metadata"]
        index._next_label = state["next_label"]
        index.journal_seq = state.get("journal_seq", 0)
        return index


# ---------------------------------------------------------------- an inner-product model in the cosine index

def to_cosine_items(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    """Item vectors with one extra coordinate so every row has norm `max_norm`: the cosine of a
    query from `to_cosine_users` with them is then its inner product with the original vectors over
    a constant, so the cosine index ranks by inner product (Bachrach et al. 2014). A vector longer
    than `max_norm` (a new item) gets 0 there: its rank is then approximate."""
    vectors = np.asarray(vectors, dtype=np.float32)
    extra = np.sqrt(np.maximum(max_norm ** 2 - (vectors ** 2).sum(axis=1), 0.0))
    return np.hstack([vectors, extra[:, None]]).astype(np.float32)


def to_cosine_users(vectors: np.ndarray) -> np.ndarray:
    """Query vectors with a 0 extra coordinate, to search items mapped by `to_cosine_items`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.hstack([vectors, np.zeros((len(vectors), 1), dtype=np.float32)])
