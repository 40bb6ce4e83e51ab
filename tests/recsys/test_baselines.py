"""Most-popular, item-kNN and content scoring on hand-made histories."""

import numpy as np
import pytest

from solutions.recsys.baselines import ItemKNN, MostPopular, top_k_cosine, user_item_matrix
from solutions.recsys.content import ContentRecommender, HybridRecommender, choose_alpha, recency_weights
from solutions.recsys.data import Interaction
from solutions.recsys.protocol import temporal_split

ITEMS = ["a", "b", "c", "d"]


def split_of(histories):
    events = [Interaction(u, item, float(t), None) for u, items in histories.items() for t, item in enumerate(items)]
    return temporal_split(events, ITEMS, test_fraction=0.0, min_interactions=10**6)


def test_most_popular_counts_users():
    model = MostPopular().fit(split_of({"u": ["a", "b"], "v": ["a"], "w": ["c", "a"]}))
    assert model.score([[]])[0].tolist() == [3, 1, 1, 0]


def test_item_cosine_by_hand():
    # users x items: u=[1,1,0,0], v=[1,0,1,0]; cos(a,b)=1/sqrt(2), cos(b,c)=0, d has no users
    matrix = user_item_matrix([[("a", 0), ("b", 1)], [("a", 0), ("c", 1)]], {i: n for n, i in enumerate(ITEMS)}, 4)
    sims = top_k_cosine(matrix, neighbours=3).toarray()
    assert sims[0, 1] == pytest.approx(1 / np.sqrt(2)) and sims[1, 2] == 0 and sims[0, 0] == 0
    assert not sims[3].any() and not sims[:, 3].any()


def test_item_knn_cannot_score_items_without_interactions():
    model = ItemKNN().fit(split_of({"u": ["a", "b"], "v": ["a", "c"]}))
    scores = model.score([[("a", 0.0)]])[0]
    assert scores[3] == 0 and scores[1] > 0


def test_recency_weights_halve_every_half_life():
    assert recency_weights(3, 1.0).tolist() == [0.25, 0.5, 1.0]


def test_content_ranks_by_text_similarity_including_cold_items():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.99, 0.01]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = ContentRecommender(vectors, ITEMS).score([[("a", 0.0)]])[0]
    assert np.argsort(-scores).tolist()[:2] == [0, 3]  # d never interacted with, still ranked


def test_hybrid_alpha_is_chosen_on_validation():
    histories = {f"u{i}": ["a", "b", "a", "b", "c", "d"] for i in range(6)}
    split = split_of(histories)
    vectors = np.eye(4, dtype=np.float32)
    hybrid = HybridRecommender(ItemKNN(), ContentRecommender(vectors, ITEMS))
    alpha, results = choose_alpha(hybrid, split, grid=(0.0, 1.0))
    assert alpha in (0.0, 1.0) and set(results) == {0.0, 1.0}
