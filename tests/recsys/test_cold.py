"""Cold items in the collaborative index (solutions.recsys.cold): the text -> factors map saved without
pickles, the exposure chosen on the validation cut within the NDCG budget, and an ALS index that takes
new items by text through POST /v1/items, keeps them through a crash, and refuses them without a map;
reserved slots for cold items (solutions.recsys.cold_slots): the merge, the choice, and serving equal to offline."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from core.foundation.errors import UserError
from core.serving.app import ServiceLimits
from solutions.recsys.cold import MAP_FILE, MAP_META, TextToVectors, choose_exposure, pick_exposure
from solutions.recsys.cold_slots import merge_slots, pick_policy, rank_with_slots
from solutions.recsys.data import load_interactions
from solutions.recsys.factorization import ALS
from solutions.recsys.factors_index import build_factor_index, factor_cold_items, factor_view
from solutions.recsys.live import Recommender
from solutions.recsys.protocol import RankingSplit, split_dataset, training_split
from tests.http_helpers import running
from tests.recsys.conftest import crash

LIMITS = ServiceLimits()
NEW_TOY = "Wooden Stacking Rainbow. toys. Colourful wooden arches children stack and sort; builds fine motor skills."
NEW_BEAUTY = "Rose Face Serum. beauty. Hydrating serum with rosehip oil that smooths dry skin and evens out tone."


def _als() -> ALS:
    return ALS(factors=8, regularization=0.1, alpha=10.0, iterations=10, seed=0)


def _category(data, item: str) -> str:
    return data.items[item].split(". ")[1]


@pytest.fixture(scope="module")
def demo(tiny_backbone_dir):
    """The demo catalog, ALS fitted on every interaction, and its cold items (tiny text vectors, 2% budget)."""
    data = load_interactions("demo_catalog")
    split = training_split(data)
    model = _als().fit(split)
    return data, split, model, factor_cold_items(model, split, data.items, encoder="tiny")


def test_the_map_roundtrips_through_safetensors_and_json(tmp_path):
    rng = np.random.default_rng(0)
    text, truth = rng.normal(size=(40, 6)), rng.normal(size=(6, 3))
    mapping = TextToVectors.fit(text, text @ truth + 0.5)
    mapping.save(tmp_path, exposure=1.5)
    loaded, meta = TextToVectors.load(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MAP_FILE, MAP_META])  # no pickles
    assert meta["exposure"] == 1.5 and meta["dim"] == 3 and meta["text_dim"] == 6 and loaded.alpha == mapping.alpha
    np.testing.assert_array_equal(loaded(text[:5]), mapping(text[:5]))
    np.testing.assert_allclose(mapping(text[:5]), text[:5] @ truth + 0.5, atol=0.2)  # it learned the linear map


def test_the_map_refuses_nan_and_a_wrong_dimension():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(10, 4))
    with pytest.raises(UserError, match="NaN or Inf"):
        TextToVectors.fit(np.where(np.arange(4) == 2, np.nan, text), text[:, :2])
    mapping = TextToVectors.fit(text, text[:, :2])
    with pytest.raises(UserError, match="NaN or Inf"):
        mapping(np.full((1, 4), np.inf))
    with pytest.raises(UserError, match="dimension 3"):
        mapping(np.zeros((1, 3)))


CURVE = [{"exposure": 0.0, "ndcg@10": 0.300, "cold_recall@20": 0.00},
         {"exposure": 1.0, "ndcg@10": 0.297, "cold_recall@20": 0.05},
         {"exposure": 2.0, "ndcg@10": 0.290, "cold_recall@20": 0.10},
         {"exposure": 4.0, "ndcg@10": 0.250, "cold_recall@20": 0.30}]


@pytest.mark.parametrize("budget,expected", [(0.0, 0.0), (0.02, 1.0), (0.05, 2.0), (0.2, 4.0), (1.0, 4.0)])
def test_the_pick_is_the_most_cold_recall_within_the_ndcg_budget(budget, expected):
    assert pick_exposure(CURVE, budget) == expected


def test_a_budget_outside_zero_to_one_is_refused():
    with pytest.raises(UserError, match="max_metric_loss"):
        pick_exposure(CURVE, 1.5)


def test_the_exposure_chosen_on_validation_keeps_ndcg_within_the_budget(demo):
    _, _, _, cold = demo
    curve = [p for p in cold.report["curve"] if "exposure" in p]  # the scale policy's points
    base = curve[0]
    assert base["exposure"] == 0.0 and base["cold_recall@20"] == 0.0  # the model alone never shows a new item
    assert cold.exposure == cold.report["exposure"] > 0
    for budget in (0.0, 0.02, 0.1, 1.0):
        chosen = next(p for p in curve if p["exposure"] == pick_exposure(curve, budget))
        assert chosen["ndcg@10"] >= (1 - budget) * base["ndcg@10"]
        better = [p for p in curve if p["cold_recall@20"] > chosen["cold_recall@20"]]
        assert all(p["ndcg@10"] < (1 - budget) * base["ndcg@10"] for p in better)
    assert pick_exposure(curve, 0.0) < pick_exposure(curve, 1.0)  # the budget is what limits the exposure
    chosen = cold.report["chosen"]  # among exposures and reserved slots
    assert chosen["cold_recall@20"] > 0 and chosen["ndcg@10"] >= 0.98 * base["ndcg@10"]
    assert all(p["cold_recall@20"] <= chosen["cold_recall@20"] for p in cold.report["curve"]
               if p["ndcg@10"] >= 0.98 * base["ndcg@10"])


def test_the_exposure_choice_never_reads_the_test_windows(demo):
    data, _, _, cold = demo
    split = split_dataset(data)  # with test windows, which a scrambled copy replaces
    text = cold.item_text_vectors
    scrambled = RankingSplit(split.items, split.train, {"nobody": data.interactions[:3]}, split.threshold)
    assert split.test and scrambled.test != split.test

    def fit(part):
        return factor_view(_als().fit(part))

    assert choose_exposure(fit, scrambled, text) == choose_exposure(fit, split, text)


def test_catalog_items_without_a_positive_are_indexed_through_the_map(demo, tmp_path):
    data, _, model, cold = demo
    index = build_factor_index(model, data, tmp_path / "idx", cold=cold)
    unrated = sorted(set(data.items) - {model.items[i] for i in model.active})
    assert unrated and len(index) == len(data.items) and all(item in index for item in unrated)
    catalog = json.loads((tmp_path / "idx" / "catalog.json").read_text())
    assert catalog["encoder"] == "tiny" and json.loads((tmp_path / "idx" / MAP_META).read_text())["exposure"] > 0


def test_post_items_on_an_als_index_with_a_map_recommends_the_new_item(demo, tmp_path):
    from solutions.recsys.service import create_app

    data, _, model, cold = demo
    build_factor_index(model, data, tmp_path / "idx", cold=cold)
    toys = [i for i in sorted(data.items) if _category(data, i) == "toys"][:5]
    beauty = [i for i in sorted(data.items) if _category(data, i) == "beauty"][:5]
    rec = Recommender.load(tmp_path / "idx")
    try:
        with running(create_app(rec, limits=LIMITS), LIMITS) as base, httpx.Client(base_url=base, timeout=30) as http:
            for item_id, text in (("new-toy", NEW_TOY), ("new-beauty", NEW_BEAUTY)):
                r = http.post("/v1/items", json={"id": item_id, "text": text})
                assert r.status_code == 201, r.text
            ranked = {}
            for name, history in (("toys", toys), ("beauty", beauty)):
                r = http.post("/v1/recommend", json={"items": history, "k": 30})  # of 122
                assert r.status_code == 200, r.text
                ranked[name] = [hit["id"] for hit in r.json()["items"]]
    finally:
        rec.close()
    assert "new-toy" in ranked["toys"] and "new-beauty" in ranked["beauty"]
    rank = {name: {item: r for r, item in enumerate(ids)} for name, ids in ranked.items()}
    assert rank["toys"]["new-toy"] < rank["toys"].get("new-beauty", 99)
    assert rank["beauty"]["new-beauty"] < rank["beauty"].get("new-toy", 99)


def test_a_new_item_survives_a_crash_with_its_vector(demo, tmp_path):
    data, _, model, cold = demo
    build_factor_index(model, data, tmp_path / "idx", cold=cold)
    rec = Recommender.load(tmp_path / "idx")
    rec.add_item("new-toy", NEW_TOY, {"category": "toys"})
    vector, before = rec.index.vector("new-toy"), rec.recommend(["i001", "i007"], k=20)
    crash(rec)  # no close, no compaction: only the journal has it
    again = Recommender.load(tmp_path / "idx")
    try:
        np.testing.assert_array_equal(again.index.vector("new-toy"), vector)
        assert again.index.metadata["new-toy"] == {"category": "toys"}
        assert again.recommend(["i001", "i007"], k=20) == before
    finally:
        again.close()


def test_without_a_map_a_text_is_a_400_with_the_reason(demo, tmp_path):
    from solutions.recsys.service import create_app

    data, _, model, _ = demo
    build_factor_index(model, data, tmp_path / "idx")
    rec = Recommender.load(tmp_path / "idx")
    try:
        with running(create_app(rec, limits=LIMITS), LIMITS) as base, httpx.Client(base_url=base, timeout=30) as http:
            r = http.post("/v1/items", json={"id": "new-toy", "text": NEW_TOY})
    finally:
        rec.close()
    assert r.status_code == 400 and "--cold-items" in r.json()["error"]


def test_recsys_index_cold_items_from_the_command_line(tmp_path, tiny_backbone_dir):
    out = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "index", "demo_catalog", "--model", "als",
                           "--cold-items", "--encoder", "tiny", "--max-metric-loss", "0.2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "cold map: " in done.stdout and "NDCG@10" in done.stdout, done.stderr
    assert json.loads((out / MAP_META).read_text())["choice"]["max_metric_loss"] == 0.2
    refused = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "index", "demo_catalog", "--model",
                              "tiny", "--cold-items", "--out", str(tmp_path / "text")],
                             capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2 and "--model als|bpr" in refused.stderr and "Traceback" not in refused.stderr


# ---------------------------------------------------------------- reserved slots (solutions.recsys.cold_slots)
WARM, COLD = ["w1", "w2", "w3", "w4", "w5", "w6"], ["c1", "c2", "c3"]


@pytest.mark.parametrize("k,start,slots,expected", [
    (6, 2, 2, ["w1", "c1", "c2", "w2", "w3", "w4"]),
    (5, 4, 5, ["w1", "w2", "w3", "c1", "c2"]),  # reserved positions clipped to the list's length
    (3, 4, 2, ["w1", "w2", "w3"]),  # a list shorter than start gets no cold item
    (4, 1, 0, ["w1", "w2", "w3", "w4"]),  # no slots: the model alone
    (6, 1, 5, ["c1", "c2", "c3", "w1", "w2", "w3"]),  # the cold side runs out: warm items fill its slots
    (9, 1, 1, ["c1", "w1", "w2", "w3", "w4", "w5", "w6", "c2", "c3"]),  # the warm side runs out: cold items fill
])
def test_merge_slots_places_cold_items_at_the_reserved_positions(k, start, slots, expected):
    assert merge_slots(WARM, COLD, k, start, slots) == expected


def test_merge_slots_never_repeats_an_item_and_refuses_a_bad_start():
    merged = merge_slots(["a", "b", "c", "d"], ["b", "x", "a"], 5, 1, 2)
    assert merged == ["b", "x", "a", "c", "d"] and len(set(merged)) == len(merged)
    hits = merge_slots([("a", 0.9), ("b", 0.8)], [("a", 0.1), ("z", 0.2)], 3, 2, 1, key=lambda hit: hit[0])
    assert hits == [("a", 0.9), ("z", 0.2), ("b", 0.8)]
    with pytest.raises(UserError, match="start"):
        merge_slots(WARM, COLD, 5, 0, 1)


SLOT_CURVE = [{"exposure": 0.0, "ndcg@10": 0.30, "recall@20": 0.40, "cold_recall@20": 0.00},
              {"exposure": 2.0, "ndcg@10": 0.29, "recall@20": 0.39, "cold_recall@20": 0.02},
              {"start": 1, "slots": 2, "ndcg@10": 0.25, "recall@20": 0.38, "cold_recall@20": 0.20},
              {"start": 11, "slots": 2, "ndcg@10": 0.30, "recall@20": 0.36, "cold_recall@20": 0.10},
              {"start": 16, "slots": 2, "ndcg@10": 0.30, "recall@20": 0.38, "cold_recall@20": 0.10},
              {"start": 16, "slots": 3, "ndcg@10": 0.30, "recall@20": 0.37, "cold_recall@20": 0.10}]


@pytest.mark.parametrize("budget,expected", [(0.0, (16, 2)), (0.1, (16, 2)), (0.2, (1, 2))])
def test_the_policy_pick_keeps_the_budget_and_prefers_the_least_intrusive(budget, expected):
    chosen = pick_policy(SLOT_CURVE, budget)  # ties: fewer slots, then the later start
    assert (chosen["start"], chosen["slots"]) == expected


def test_a_recall_budget_keeps_slots_past_10_from_taking_the_top_20():
    assert (pick_policy(SLOT_CURVE, 0.0)["start"], pick_policy(SLOT_CURVE, 0.0)["slots"]) == (16, 2)  # recall -5%
    assert pick_policy(SLOT_CURVE, 0.05, max_recall_loss=0.03)["exposure"] == 2.0  # recall -2.5%: only the scale fits
    assert pick_policy(SLOT_CURVE, 0.0, max_recall_loss=0.0)["exposure"] == 0.0  # nothing else keeps both
    with pytest.raises(UserError, match="max_metric_loss"):
        pick_policy(SLOT_CURVE, 0.0, max_recall_loss=2.0)


def test_a_budget_of_zero_never_takes_top_10_slots_that_cost_ndcg(demo):
    curve = demo[3].report["curve"]
    base = next(p for p in curve if p.get("exposure") == 0.0)["ndcg@10"]
    chosen = pick_policy(curve, 0.0)
    assert chosen["ndcg@10"] >= base
    costly = [p for p in curve if p.get("slots") and p["start"] <= 10 and p["ndcg@10"] < base]
    assert costly and chosen not in costly
    assert all(p["ndcg@10"] == base for p in curve if p.get("slots") and p["start"] > 10)  # positions 1-10 unchanged


def _slot_index(demo, path, place, metadata=None):
    data, _, model, cold = demo
    slotted = dataclasses.replace(cold, exposure=1.0, slots=place)
    build_factor_index(model, data, path, cold=slotted, metadata=metadata)
    return slotted


def _offline(model, cold, histories, k, place, allowed=None):
    """The policy's lists by cold_slots.rank_with_slots, as the served fold-in sees the histories."""
    column = {item: i for i, item in enumerate(model.items)}
    learned = {model.items[i] for i in model.active}
    users = model.user_factors([[(i, 0.0) for i in h if i in learned] for h in histories])
    is_cold = np.ones(len(model.items), dtype=bool)
    is_cold[model.active] = False
    hidden = {i for item, i in column.items() if allowed is not None and item not in allowed}
    seen = [np.array(sorted({column[i] for i in h} | hidden), dtype=np.int64) for h in histories]
    lists = rank_with_slots(users, model.item_factors, cold.vectors(np.arange(len(model.items))), is_cold, seen, k,
                            *place)
    return [[model.items[i] for i in ranked] for ranked in lists], users, is_cold, seen


def _histories(split, n=5):
    users = [u for u in sorted(split.train) if split.history(u)][:n]
    return [[item for item, _ in split.history(u)] for u in users]


def test_http_recommend_serves_the_cold_slots_as_offline(demo, tmp_path):
    from solutions.recsys.service import create_app

    _, split, model, _ = demo
    place = (2, 3)
    cold = _slot_index(demo, tmp_path / "idx", place)
    histories = _histories(split)
    expected, users, is_cold, seen = _offline(model, cold, histories, 20, place)
    rec = Recommender.load(tmp_path / "idx")
    try:
        assert rec.cold_slots is not None and (rec.cold_slots.start, rec.cold_slots.slots) == place
        with running(create_app(rec, limits=LIMITS), LIMITS) as base, httpx.Client(base_url=base, timeout=30) as http:
            served = []
            for history in histories:
                r = http.post("/v1/recommend", json={"items": history, "k": 20})
                assert r.status_code == 200, r.text
                served.append([hit["id"] for hit in r.json()["items"]])
    finally:
        rec.close()
    assert served == expected
    mapped = cold.vectors(np.arange(len(model.items)))
    for ranked, user, skip in zip(served, users, seen):
        scores = np.where(is_cold, mapped @ user, -np.inf)
        scores[skip] = -np.inf
        assert ranked[place[0] - 1] == model.items[int(np.argmax(scores))]  # the user's best cold item, at start
        assert all(is_cold[model.items.index(i)] for i in ranked[1:4])
        assert not any(is_cold[model.items.index(i)] for i in ranked[:1] + ranked[4:])


def test_filters_apply_to_the_cold_slots_and_the_cache_follows_writes(demo, tmp_path):
    data, split, model, _ = demo
    place = (1, 3)
    metadata = {item: {"category": _category(data, item)} for item in data.items}
    cold = _slot_index(demo, tmp_path / "idx", place, metadata)
    toys = {item for item, meta in metadata.items() if meta["category"] == "toys"}
    histories = _histories(split, 3)
    expected, *_ = _offline(model, cold, histories, 10, place, allowed=toys)
    rec = Recommender.load(tmp_path / "idx")
    try:
        served = [[i for i, _ in rec.recommend(h, 10, where={"category": "toys"})] for h in histories]
        assert served == expected and all(i in toys for ranked in served for i in ranked)
        rec.add_item("new-beauty", NEW_BEAUTY, {"category": "beauty"})
        rec.add_item("new-toy", NEW_TOY, {"category": "toys"})
        assert {"new-beauty", "new-toy"} <= set(rec.cold_slots.cold_items(rec.index)[0])
        for history in histories:
            ranked = [i for i, _ in rec.recommend(history, 10, where={"category": "toys"})]
            assert "new-beauty" not in ranked and all(rec.index.metadata[i]["category"] == "toys" for i in ranked)
        rec.remove_item("new-toy")
        assert "new-toy" not in rec.cold_slots.cold_items(rec.index)[0]
    finally:
        rec.close()


def test_an_index_with_the_scale_policy_still_loads(demo, tmp_path):
    data, split, model, cold = demo
    build_factor_index(model, data, tmp_path / "idx", cold=dataclasses.replace(cold, exposure=2.0, slots=None))
    meta_path = tmp_path / "idx" / MAP_META
    meta = json.loads(meta_path.read_text())
    meta.pop("slots")  # as written before reserved slots existed
    meta_path.write_text(json.dumps(meta))
    history = _histories(split, 1)[0]
    rec = Recommender.load(tmp_path / "idx")
    try:
        assert rec.cold_slots is None
        query = rec.user_model.query_vector(history)
        assert rec.recommend(history, 10) == rec.index.search(query, 10, exclude=set(history)).row(0)
    finally:
        rec.close()
