"""Cold items in the collaborative index (solutions.recsys.cold): the text -> factors map saved without
pickles, the exposure chosen on the validation cut within the NDCG budget, and an ALS index that takes
new items by text through POST /v1/items, keeps them through a crash, and refuses them without a map."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from core.foundation.errors import UserError
from core.serving.app import ServiceLimits
from solutions.recsys.cold import MAP_FILE, MAP_META, TextToVectors, choose_exposure, pick_exposure
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
    curve, base = cold.report["curve"], cold.report["curve"][0]
    assert base["exposure"] == 0.0 and base["cold_recall@20"] == 0.0  # the model alone never shows a new item
    assert cold.exposure == cold.report["exposure"] > 0
    for budget in (0.0, 0.02, 0.1, 1.0):
        chosen = next(p for p in curve if p["exposure"] == pick_exposure(curve, budget))
        assert chosen["ndcg@10"] >= (1 - budget) * base["ndcg@10"]
        better = [p for p in curve if p["cold_recall@20"] > chosen["cold_recall@20"]]
        assert all(p["ndcg@10"] < (1 - budget) * base["ndcg@10"] for p in better)
    assert pick_exposure(curve, 0.0) < pick_exposure(curve, 1.0)  # the budget is what limits the exposure
    chosen = next(p for p in curve if p["exposure"] == cold.exposure)
    assert chosen["cold_recall@20"] > 0 and chosen["ndcg@10"] >= 0.98 * base["ndcg@10"]


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
    assert done.returncode == 0 and "cold map: exposure" in done.stdout, done.stderr
    assert json.loads((out / MAP_META).read_text())["choice"]["max_metric_loss"] == 0.2
    refused = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "index", "demo_catalog", "--model",
                              "tiny", "--cold-items", "--out", str(tmp_path / "text")],
                             capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2 and "--model als|bpr" in refused.stderr and "Traceback" not in refused.stderr
