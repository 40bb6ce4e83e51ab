"""The set autoencoder (solutions.recsys.autoencoder, set_recommender, set_recipe): it learns, it is saved
without pickles and loads to the same scores, the HTTP service ranks exactly as the offline protocol scores,
an event changes the next answer, a text is refused with the reason, and the recipe writes a run that
`recsys index RUN` serves."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import httpx
import numpy as np
import pytest
import torch

from core.foundation.errors import UserError
from core.foundation.settings import load_config_file
from core.serving.app import ServiceLimits
from solutions.recsys.autoencoder import SetConfig, bag, text_init_table, training_batch
from solutions.recsys.data import Interaction, load_interactions
from solutions.recsys.live import Recommender
from solutions.recsys.protocol import evaluate_scores, ranking_metrics, split_dataset
from solutions.recsys.recipe_config import SetRecipe
from solutions.recsys.set_recommender import SetRecommender, build_set_index
from tests.http_helpers import running
from verticals.registry import RECIPES, TASKS

LIMITS = ServiceLimits()
SMALL = SetConfig(dim=16, steps=60, validate_every=10, patience=3, batch_size=16, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, catalog_vectors):
    data, items, vectors, _ = catalog_vectors
    split = split_dataset(data)
    assert split.items == items
    model = SetRecommender(SMALL, vectors).fit(split)
    out = tmp_path_factory.mktemp("set-index")
    build_set_index(model, data, out)
    return data, split, model, out


def test_a_batch_cuts_each_history_in_time_and_targets_the_later_items():
    sequences = [np.arange(10), np.arange(20, 23)]
    cfg = SetConfig(dropout=0.0, reconstruct_weight=0.25)
    batch = training_batch(sequences, np.array([0, 1]), cfg, np.random.default_rng(0))
    rows, cols, weights = batch["target_rows"].numpy(), batch["target_cols"].numpy(), batch["target_weights"].numpy()
    for r, seq in enumerate(sequences):
        kept = batch["items"][batch["offsets"][r]:(batch["offsets"][r + 1] if r + 1 < len(sequences) else None)]
        assert sorted(cols[rows == r].tolist()) == seq.tolist()  # every item of the history is a target
        later = set(seq.tolist()) - set(kept.tolist())
        assert later and all(w == (1.0 if c in later else 0.25) for c, w in zip(cols[rows == r], weights[rows == r]))
        assert kept.tolist() == seq[:len(kept)].tolist()  # the input is the earlier part, in order


def test_dropout_keeps_at_least_one_item_and_bags_weigh_by_the_root_of_the_length():
    cfg = SetConfig(dropout=0.95)
    batch = training_batch([np.arange(3)] * 32, np.arange(32), cfg, np.random.default_rng(1))
    assert (np.diff(np.append(batch["offsets"].numpy(), len(batch["items"]))) >= 1).all()
    _, offsets, weights = bag([np.array([1, 2, 3, 4]), np.array([5])])
    assert offsets.tolist() == [0, 4] and np.allclose(weights.numpy(), [0.5] * 4 + [1.0])


def test_the_text_start_keeps_similar_texts_close():
    text = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    table = text_init_table(text, 4, 0.01, 0).numpy()
    assert abs(table.std() - 0.01) < 1e-6
    near, far = np.linalg.norm(table[0] - table[1]), np.linalg.norm(table[0] - table[2])
    assert near < far


def test_it_learns_and_the_saved_model_scores_the_same(fitted):
    _, split, model, out = fitted
    report = model.fit_report
    assert report["validation_ndcg@10"] > 0 and report["history"] and "refit_seconds" in report
    assert (out / "set_autoencoder.safetensors").is_file() and not list(out.glob("*.pkl"))
    loaded = SetRecommender.load(out)
    histories = [split.history(u) for u in split.eval_users()[:5]]
    np.testing.assert_allclose(loaded.score(histories), model.score(histories), rtol=1e-6, atol=1e-6)
    popular = evaluate_scores(lambda us: np.tile(np.arange(len(split.items))[::-1], (len(us), 1)).astype(float),
                              split)["ndcg@10"]
    assert evaluate_scores(model.score_users(split), split)["ndcg@10"] > popular  # better than a fixed order


def test_ndcg_through_http_equals_the_offline_ndcg_of_the_same_model(fitted):
    from solutions.recsys.service import create_app  # needs the [serve] extra, as the service does

    _, split, model, out = fitted
    users = split.eval_users()
    offline = evaluate_scores(model.score_users(split), split, users=users)
    rec = Recommender.load(out)
    try:
        with running(create_app(rec, limits=LIMITS), LIMITS) as base, httpx.Client(base_url=base, timeout=30) as http:
            ranked = []
            for user in users:
                r = http.post("/v1/recommend", json={"items": [i for i, _ in split.history(user)], "k": 10})
                assert r.status_code == 200, r.text
                ranked.append([hit["id"] for hit in r.json()["items"]])
            refused = http.post("/v1/items", json={"id": "brand-new", "text": "a new item"})
            assert refused.status_code == 400 and "set autoencoder" in refused.json()["error"]
            assert http.post("/v1/recommend", json={"items": ["no-such-item"], "k": 5}).status_code in (400, 404)
    finally:
        rec.close()
    served = ranking_metrics(ranked, [split.relevant(u) for u in users], len(split.items))
    assert len(users) >= 20 and offline["ndcg@10"] > 0
    assert abs(served["ndcg@10"] - offline["ndcg@10"]) <= 1e-6
    assert abs(served["recall@10"] - offline["recall@10"]) <= 1e-6


def test_an_event_changes_the_next_answer(fitted, tmp_path):
    data, split, model, _ = fitted
    build_set_index(model, data, tmp_path / "idx")
    rec = Recommender.load(tmp_path / "idx")
    try:
        user = split.eval_users()[0]
        before = rec.recommend_for_user(user, k=5)
        assert rec.add_events([Interaction(user, before[0][0], 1_767_225_600.0, None)]) == [None]
        after = rec.recommend_for_user(user, k=5)
        assert before[0][0] not in [item for item, _ in after]
    finally:
        rec.close()


def test_a_huge_history_is_bounded_work(fitted):
    _, split, model, _ = fitted
    huge = [(split.items[i % len(split.items)], 0.0) for i in range(100_000)]
    vectors = model.user_vectors([huge])
    assert vectors.shape == (1, SMALL.dim + 1) and np.isfinite(vectors).all()


def test_the_recipe_trains_a_run_that_recsys_index_run_serves(tmp_path):
    overrides = {"data": "demo_catalog", "model.encoder": "tiny", "model.dim": "16", "train.steps": "40",
                 "train.validate_every": "10"}
    cfg = load_config_file(SetRecipe, RECIPES["recsys/set"], overrides, name="recsys/set")
    assert TASKS["recsys-set"].schema is SetRecipe
    report = TASKS["recsys-set"].runner(cfg, tmp_path / "run", progress=False)
    assert report["fit"]["validation_ndcg@10"] > 0 and report["network"]["dim"] == 16
    assert "## Training" in (tmp_path / "run" / "report.md").read_text()
    assert "library_name: pytorch" in (tmp_path / "run" / "README.md").read_text()
    assert (tmp_path / "run" / "checkpoints").is_dir()
    out = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-m", "verticals.cli", "recsys", "index", str(tmp_path / "run"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "set autoencoder" in done.stdout, done.stderr
    rec = Recommender.load(out)
    try:
        assert len(rec.recommend(["i001"], k=3)) == 3
    finally:
        rec.close()
    with pytest.raises(UserError, match="finished run"):
        TASKS["recsys-set"].runner(cfg, tmp_path / "run", resume=True, progress=False)
    (tmp_path / "run" / "report.json").unlink()  # as if the process died after its last checkpoint
    resumed = TASKS["recsys-set"].runner(cfg, tmp_path / "run", resume=True, progress=False)
    assert resumed["fit"]["best_step"] == report["fit"]["best_step"]
    with pytest.raises(UserError, match="unknown"):
        load_config_file(SetRecipe, RECIPES["recsys/set"], {"data": "demo_catalog", "model.dims": "8"},
                         name="recsys/set")
    with pytest.raises(UserError, match="serve it with `verticals recsys index"):
        TASKS["recsys-set"].export_model(tmp_path / "run", report, tmp_path / "hf")


def test_a_wrong_number_of_text_vectors_is_refused():
    with pytest.raises(UserError, match="text_vectors"):
        SetRecommender(replace(SMALL, steps=1), np.zeros((3, 4))).fit(split_dataset(load_interactions("demo_catalog")))
    assert torch.get_num_threads() >= 1
