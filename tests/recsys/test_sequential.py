"""The sequential (SASRec-style) recommender: loss and batches by hand, learning a sequential
pattern, the dot-product/cosine map, save/load, cold items, and serving through the index."""

import math

import numpy as np
import pytest
import torch

from core.foundation.errors import UserError
from solutions.recsys.data import Interaction, InteractionData
from solutions.recsys.index import to_cosine_items, to_cosine_users
from solutions.recsys.protocol import evaluate_scores, temporal_split
from solutions.recsys.sasrec import SequentialConfig, next_items_loss, training_batch
from solutions.recsys.sequential import SequentialRecommender, build_sequential_index

N_ITEMS, N_USERS, LENGTH = 60, 48, 12
SMALL = {"dim": 16, "layers": 1, "heads": 2, "max_len": 16, "dropout": 0.0, "steps": 120, "batch_size": 32,
         "lr": 1e-2, "validate_every": 40, "patience": 0, "loss_positions": 0}


def cyclic_events(rng: np.random.Generator) -> list[Interaction]:
    """Each user consumes consecutive items of a cycle (i_s, i_s+1, ...) from a random start, one a day:
    the next item is fully determined by the current one, and popularity is flat."""
    events = []
    for u in range(N_USERS):
        start = int(rng.integers(N_ITEMS))
        for t in range(LENGTH):
            events.append(Interaction(f"u{u}", f"i{(start + t) % N_ITEMS}", 86400.0 * t, None))
    return events


@pytest.fixture(scope="module")
def split():
    items = [f"i{i}" for i in range(N_ITEMS)]
    return temporal_split(cyclic_events(np.random.default_rng(0)), items, threshold=None)


TEXTS = {f"i{i}": f"film number {i}" for i in range(N_ITEMS)}


@pytest.fixture(scope="module")
def fitted(split):
    from solutions.recsys.content import TextEncoder, embed_catalog

    text = embed_catalog(TextEncoder.load("tiny", 16), split.items, TEXTS)  # the served encoder's space
    return SequentialRecommender(SequentialConfig(**SMALL), text).fit(split)


def test_loss_is_log_catalog_size_for_uninformative_states():
    states, items = torch.zeros(2, 3), torch.randn(5, 3)
    targets = torch.tensor([[0, 4], [2, -1]])  # -1: no target there, not counted
    assert float(next_items_loss(states, items, targets)) == pytest.approx(math.log(5))


def test_loss_averages_the_log_probability_of_each_real_target():
    states = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # logits 2 and 0
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(1 / (math.exp(2) + 1))) / 2
    assert float(next_items_loss(states, items, torch.tensor([[0, 1]]))) == pytest.approx(expected)


def test_training_batch_targets_are_the_next_items_within_the_crop():
    sequences = [np.array([1, 2, 3, 4]), np.array([5, 6])]
    batch = training_batch(sequences, np.array([0, 1]), max_len=10, window=2, rng=np.random.default_rng(0))
    assert batch["inputs"].tolist() == [[1, 2, 3], [5, 0, 0]]
    assert batch["lengths"].tolist() == [3, 1]
    assert batch["targets"][0].tolist() == [[2, 3], [3, 4], [4, 0]]
    assert batch["targets"][1].tolist() == [[6, 0], [0, 0], [0, 0]]


def test_training_batch_crops_long_histories_to_max_len():
    batch = training_batch([np.arange(1, 101)], np.array([0]), max_len=5, window=1, rng=np.random.default_rng(3))
    inputs, targets = batch["inputs"][0].tolist(), batch["targets"][0, :, 0].tolist()
    assert len(inputs) == 5 and targets == [x + 1 for x in inputs]
    assert inputs == list(range(inputs[0], inputs[0] + 5))


def test_learns_a_sequential_pattern_far_above_chance(split, fitted):
    metrics = evaluate_scores(fitted.score_users(split), split)
    # chance: 3 relevant among the ~51 unseen items -> NDCG@10 about 0.2; the pattern is deterministic
    assert metrics["ndcg@10"] > 0.6, metrics
    assert fitted.fit_report["best_step"] > 0 and fitted.fit_report["validation_ndcg@10"] is not None


def test_score_is_the_dot_product_of_user_and_item_vectors(split, fitted):
    histories = [split.history(u) for u in sorted(split.train)[:5]]
    expected = fitted.user_vectors(histories) @ fitted.item_vectors().T
    np.testing.assert_allclose(fitted.score(histories), expected, rtol=1e-5, atol=1e-5)


def test_cosine_map_keeps_the_dot_product_ranking():
    rng = np.random.default_rng(0)
    items, users = rng.normal(size=(50, 4)) * rng.uniform(0.1, 3, size=(50, 1)), rng.normal(size=(3, 4))
    mapped = to_cosine_items(items, float(np.linalg.norm(items, axis=1).max()))
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), np.linalg.norm(items, axis=1).max(), rtol=1e-5)
    queries = to_cosine_users(users)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (mapped / np.linalg.norm(mapped, axis=1, keepdims=True)).T
    for row in range(3):
        assert np.argsort(-cosine[row]).tolist() == np.argsort(-(users[row] @ items.T)).tolist()


def test_cold_items_fall_back_to_their_projected_text(split):
    held = {"i7"}
    train = {u: [e for e in events if e.item not in held] for u, events in split.train.items()}
    cold = type(split)(split.items, train, split.test, split.threshold)
    text = np.random.default_rng(2).normal(size=(N_ITEMS, 8)).astype(np.float32)
    model = SequentialRecommender(SequentialConfig(**{**SMALL, "steps": 5, "validate_every": 5}), text).fit(cold)
    column = split.items.index("i7")
    projected = model.model.text_proj.weight.detach().numpy() @ text[column]
    np.testing.assert_allclose(model.item_vectors()[column], projected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.score([split.history("u0")])[0, column])


def test_save_and_load_give_the_same_scores(tmp_path, split, fitted):
    fitted.save(tmp_path)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    again = SequentialRecommender.load(tmp_path)
    histories = [split.history(u) for u in sorted(split.train)[:4]]
    np.testing.assert_allclose(again.score(histories), fitted.score(histories), rtol=1e-5, atol=1e-6)


def test_load_of_a_directory_without_a_model_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="holds no sequential model"):
        SequentialRecommender.load(tmp_path)


def test_unknown_setting_is_refused_with_the_valid_ones():
    with pytest.raises(UserError, match="unknown sequential setting 'layer'.*layers"):
        SequentialConfig.from_dict({"layer": 2})


def test_unfitted_model_refuses_to_score():
    with pytest.raises(UserError, match="not trained"):
        SequentialRecommender().score([[("i1", 0.0)]])


def test_served_index_recommends_what_the_model_ranks_first(tmp_path, split, fitted):
    from solutions.recsys.live import Recommender

    data = InteractionData("cyclic", TEXTS, cyclic_events(np.random.default_rng(0)))
    build_sequential_index(fitted, data, tmp_path, encoder="tiny", max_length=16)
    served = Recommender.load(tmp_path)
    history = [item for item, _ in split.history("u3")]
    got = [item for item, _ in served.recommend(history, k=5)]
    scores = fitted.score([[(i, 0.0) for i in history]])[0]
    ranked = [split.items[c] for c in np.argsort(-scores, kind="stable") if split.items[c] not in set(history)]
    assert got == ranked[:5]
    # a new item's text goes through the model's text projection into the same space
    served.add_item("new-film", "a brand new film", {"genres": ["Drama"]})
    assert "new-film" in served.index and served.index.vector("new-film").shape == (fitted.cfg.dim + 1,)
