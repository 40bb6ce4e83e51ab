"""The item index: recall floors against exact search and every guard tripped."""

import json
import shutil
import threading
import time

import numpy as np
import pytest

from core.foundation.errors import UserError
from solutions.recsys.index import ItemIndex


def clustered(n, dim=32, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors():
    return clustered(3000)


def ids(n):
    return [f"item-{i}" for i in range(n)]


def recall(index, exact, queries, k=10):
    got, want = index.search(queries, k).ids, exact.search(queries, k).ids
    return np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want)])


@pytest.mark.parametrize("factory,floor", [("HNSW32", 0.95), ("IVF32,PQ16x4", 0.55)])
def test_approximate_indexes_meet_a_recall_floor_against_flat(vectors, factory, floor):
    exact = ItemIndex.build(ids(len(vectors)), vectors, "Flat")
    approx = ItemIndex.build(ids(len(vectors)), vectors, factory, nprobe=8, ef_search=128)
    queries = clustered(200, seed=1)
    assert recall(exact, exact, queries) == 1.0
    assert recall(approx, exact, queries) >= floor


def test_cosine_normalises_vectors():
    index = ItemIndex.build(["a", "b"], np.array([[10.0, 0.0], [1.0, 1.0]]))
    (top, score), _ = index.search(np.array([[3.0, 0.0]]), 2).row(0)
    assert top == "a" and score == pytest.approx(1.0)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_removed_ids_are_never_returned(vectors, factory):
    index = ItemIndex.build(ids(500), vectors[:500], factory, rebuild_fraction=0.9)
    gone = set(ids(500)[:100])
    index.remove(sorted(gone))
    hits = index.search(vectors[:100], 20)
    assert not gone & {i for row in hits.ids for i in row}
    assert len(index) == 400
    if factory == "HNSW32":
        assert index.tombstones == 100  # graph kept the vectors; search filtered them


def test_hnsw_rebuilds_when_tombstones_exceed_the_fraction(vectors):
    index = ItemIndex.build(ids(100), vectors[:100], "HNSW32", rebuild_fraction=0.2)
    index.remove(ids(100)[:15])
    assert index.tombstones == 15 and index.index.ntotal == 100
    index.remove(ids(100)[15:25])  # 25 > 0.2 * 100
    assert index.tombstones == 0 and index.index.ntotal == 75
    top, _ = index.search(vectors[50], 1).row(0)[0]
    assert top == "item-50"


def test_update_replaces_the_vector_and_keeps_the_id(vectors):
    index = ItemIndex.build(ids(100), vectors[:100], "HNSW32")
    index.update("item-3", vectors[7])
    assert {i for i, _ in index.search(vectors[7], 2).row(0)} == {"item-3", "item-7"}
    assert len(index) == 100


def test_exclusions_are_respected(vectors):
    index = ItemIndex.build(ids(300), vectors[:300], "HNSW32")
    first = [i for i, _ in index.search(vectors[0], 10).row(0)]
    skip = set(first[:5])
    again = index.search(vectors[:2], 10, exclude=[skip, set()])
    assert not skip & set(again.ids[0]) and len(again.row(0)) == 10
    assert set(again.ids[1][:5]) & set(index.search(vectors[1], 5).ids[0])


def test_metadata_filters_are_respected(vectors):
    meta = {f"item-{i}": {"genres": ["Drama", "Comedy"] if i % 10 == 0 else ["Action"]} for i in range(300)}
    index = ItemIndex.build(ids(300), vectors[:300], "Flat", meta)
    rows = index.search(vectors[:5], 10, where={"genres": "comedy"})
    found = {i for row in rows.ids for i in row if i is not None}
    assert found and all(int(i.split("-")[1]) % 10 == 0 for i in found)
    assert len(index.search(vectors[0], 50, where={"genres": "comedy"}).row(0)) == 30


def test_guards_reject_bad_writes(vectors):
    index = ItemIndex.build(ids(10), vectors[:10])
    with pytest.raises(UserError, match="already in the index"):
        index.add(["item-1"], vectors[:1])
    with pytest.raises(UserError, match="unknown item id"):
        index.remove(["nope"])
    with pytest.raises(UserError, match="dimension"):
        index.add(["x"], np.ones((1, 5)))
    with pytest.raises(UserError, match="bad index factory"):
        ItemIndex(8, "NotAnIndex")
    with pytest.raises(UserError, match="not trained"):
        ItemIndex(32, "IVF8,PQ4").add(["x"], vectors[:1])


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF32,SQ8"])
def test_save_load_round_trip(tmp_path, vectors, factory):
    index = ItemIndex.build(ids(1000), vectors[:1000], factory, {"item-1": {"category": "toys"}}, nprobe=8)
    index.remove(["item-2"])
    before = index.search(vectors[:20], 5)
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path)
    after = loaded.search(vectors[:20], 5)
    assert (before.ids == after.ids).all() and np.allclose(before.scores, after.scores)
    assert len(loaded) == 999 and "item-2" not in loaded and loaded.metadata["item-1"] == {"category": "toys"}
    loaded.add(["new"], vectors[2:3])  # labels continue after reload
    assert "new" in {i for i, _ in loaded.search(vectors[2], 3).row(0)}


def test_load_detects_an_id_map_that_does_not_match_the_index(tmp_path, vectors):
    ItemIndex.build(ids(50), vectors[:50]).save(tmp_path)
    state = json.loads((tmp_path / "index.json").read_text())
    state["labels"] = state["labels"][:-1]
    (tmp_path / "index.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match="id map has 49 ids but the FAISS index holds 50"):
        ItemIndex.load(tmp_path)


def test_a_save_interrupted_at_any_step_loads_the_old_save_or_the_new_one(tmp_path, vectors):
    # a save writes index.faiss.pending, then replaces index.json, then renames the pending file;
    # a crash directory is the old save with the files the new save had written by then
    old, new = tmp_path / "old", tmp_path / "new"
    index = ItemIndex.build(ids(50), vectors[:50])
    index.save(old)
    index.update("item-3", vectors[60])  # same ntotal: the id-map count alone cannot tell the saves apart
    index.journal_seq = 7
    index.save(new)

    def crashed_after(*copies):
        crash = tmp_path / f"crash{len(copies)}"
        shutil.copytree(old, crash)
        for source, target in copies:
            shutil.copy(new / source, crash / target)
        return ItemIndex.load(crash)

    pending = crashed_after(("index.faiss", "index.faiss.pending"))
    assert pending.journal_seq == 0 and np.allclose(pending.vector("item-3"), vectors[3], atol=1e-6)
    renamed_not_yet = crashed_after(("index.faiss", "index.faiss.pending"), ("index.json", "index.json"))
    assert renamed_not_yet.journal_seq == 7 and np.allclose(renamed_not_yet.vector("item-3"), vectors[60], atol=1e-6)


def test_load_detects_files_from_different_saves_of_the_same_size(tmp_path, vectors):
    index = ItemIndex.build(ids(50), vectors[:50])
    index.save(tmp_path / "a")
    index.update("item-3", vectors[60])
    index.save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "index.json", tmp_path / "a" / "index.json")
    with pytest.raises(UserError, match="no FAISS file matches index.json"):
        ItemIndex.load(tmp_path / "a")


def test_load_of_a_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a saved item index"):
        ItemIndex.load(tmp_path / "nope")


def test_save_leaves_no_temp_files(tmp_path, vectors):
    ItemIndex.build(ids(50), vectors[:50]).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss", "index.json"]


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_concurrent_searches_during_writes(vectors, factory):
    index = ItemIndex.build(ids(1000), vectors[:1000], factory, rebuild_fraction=0.05)
    errors, stop = [], threading.Event()
    removed = set()

    def searcher(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                hits = index.search(vectors[rng.integers(0, 1000, 8)], 10, exclude={"item-0"})
                snapshot = set(removed)
                bad = snapshot & {i for row in hits.ids for i in row}
                # an id removed before this search started must not come back
                assert not bad or False, bad
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for n in range(200):
        item = f"item-{n + 1}"
        index.remove([item])
        removed.add(item)
        index.add([f"new-{n}"], vectors[1000 + n:1001 + n])
        if n % 50 == 0:
            index.update(f"new-{n}", vectors[n])
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:3]
    assert len(index) == 1000 and not removed & set(index.ids)


def test_a_waiting_writer_blocks_new_readers_and_runs_after_current_ones():
    from solutions.recsys.locks import ReadWriteLock

    lock, order = ReadWriteLock(), []
    reader_in, release = threading.Event(), threading.Event()

    def reader(name, hold):
        with lock.read():
            order.append(name)
            if hold:
                reader_in.set()
                release.wait(5)

    def writer():
        with lock.write():
            with lock.write():  # re-entrant
                order.append("writer")

    first = threading.Thread(target=reader, args=("r1", True))
    first.start()
    reader_in.wait(5)
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.1)
    second = threading.Thread(target=reader, args=("r2", False))
    second.start()
    time.sleep(0.1)
    assert order == ["r1"]  # the writer waits for r1; r2 waits behind the writer
    release.set()
    for t in (first, w, second):
        t.join(5)
    assert order == ["r1", "writer", "r2"]


def test_search_params_change_the_live_index_and_survive_a_save(tmp_path, vectors):
    index = ItemIndex.build([str(i) for i in range(len(vectors))], vectors, "HNSW32", ef_search=16)
    index.set_search_params(ef_search=128)
    assert index.index.hnsw.efSearch == 128
    again = ItemIndex.load(index.save(tmp_path / "idx"))
    assert again.ef_search == 128 and again.index.hnsw.efSearch == 128
