"""Content-based recommendation: item text -> encoder embedding; user = recency-weighted items.

- `TextEncoder` wraps a core backbone (pretrained `minilm`, `tiny`, or a fine-tuned directory
  from `finetune`) in core.models.encoder.SentenceEncoder (the backbone's own pooling, length-bucketed
  batches) and always L2-normalises, so a dot product is a cosine.
- `ContentRecommender`: a user vector is the normalised weighted mean of the embeddings of the
  user's history, weight 0.5 ** (age / half_life) where age is how many items ago it was
  consumed (the latest item weighs 1). Item scores are cosines to that vector, so items that no
  one has interacted with yet (cold start) are ranked by their text alone.
- `HybridRecommender`: alpha * (item-kNN score / the user's max kNN score) + (1 - alpha) * content
  cosine; alpha is picked on a validation split carved from the training histories
  (`choose_alpha`), never on the test windows.
Leaves out: training the encoder (finetune) and the index (index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.models.backbones import Backbone, load_backbone
from core.models.encoder import SentenceEncoder
from solutions.recsys.baselines import History, ItemKNN
from solutions.recsys.protocol import RankingSplit, evaluate_scores, validation_split

MAX_LENGTH = 64  # tokens of item text an encoder reads unless told otherwise (indexing, serving)


class TextEncoder:
    """Texts -> L2-normalised embeddings: a core.models.encoder.SentenceEncoder over a backbone's encoder
    and pooling, with normalisation always on (dot product = cosine) and max length capped."""

    def __init__(self, backbone: Backbone, max_length: int = MAX_LENGTH):
        self.backbone = backbone
        self.max_length = min(max_length, backbone.max_length)

    @classmethod
    def load(cls, name: str | Path, max_length: int = MAX_LENGTH) -> "TextEncoder":
        return cls(load_backbone(str(name)), max_length)

    @property
    def sentence_encoder(self) -> SentenceEncoder:
        """Built from the backbone as it is now (finetune trains its encoder in place)."""
        return SentenceEncoder.from_backbone(self.backbone, max_length=self.max_length, normalize=True)

    @property
    def dim(self) -> int:
        return self.backbone.dim

    def tokenize(self, texts: list[str]):
        return self.sentence_encoder.tokenize(texts)

    def embed(self, batch) -> torch.Tensor:
        """Pooled, normalised embeddings with gradients (training); `batch` from `tokenize`."""
        return self.sentence_encoder.embed(batch["input_ids"], batch["attention_mask"])

    def encode(self, texts: list[str], batch_size: int = 128, device: str = "cpu") -> np.ndarray:
        """[len(texts), dim] float32, input order (batches are length-bucketed for speed)."""
        return self.sentence_encoder.encode(texts, batch_size=batch_size, device=device)


def embed_catalog(encoder: TextEncoder, items: list[str], texts: dict[str, str]) -> np.ndarray:
    """Item vectors in catalog order (an item without text is embedded from its id)."""
    return encoder.encode([texts.get(item) or item for item in items])


def recency_weights(n: int, half_life: float) -> np.ndarray:
    """Weights for a history of n items, oldest first: the latest weighs 1, each `half_life`
    items further back half as much."""
    ages = np.arange(n - 1, -1, -1, dtype=np.float64)
    return 0.5 ** (ages / half_life)


class ContentRecommender:
    """Cosine between item text embeddings and the recency-weighted user vector."""

    name = "content"

    def __init__(self, item_vectors: np.ndarray, items: list[str], half_life: float = 5.0):
        self.item_vectors, self.items, self.half_life = item_vectors, list(items), half_life
        self.item_index = {item: i for i, item in enumerate(self.items)}

    def fit(self, split: RankingSplit) -> "ContentRecommender":
        return self  # the text model is trained separately (finetune); nothing to fit here

    def user_vectors(self, histories: list[History]) -> np.ndarray:
        out = np.zeros((len(histories), self.item_vectors.shape[1]), dtype=np.float32)
        for r, history in enumerate(histories):
            cols = [self.item_index[item] for item, _ in history if item in self.item_index]
            if cols:
                vec = recency_weights(len(cols), self.half_life) @ self.item_vectors[cols]
                out[r] = vec / max(np.linalg.norm(vec), 1e-12)
        return out

    def score(self, histories: list[History]) -> np.ndarray:
        return self.user_vectors(histories) @ self.item_vectors.T


class HybridRecommender:
    """alpha * max-normalised item-kNN + (1 - alpha) * content cosine."""

    name = "hybrid"

    def __init__(self, knn: ItemKNN, content: ContentRecommender, alpha: float = 0.5):
        self.knn, self.content, self.alpha = knn, content, alpha

    def fit(self, split: RankingSplit) -> "HybridRecommender":
        self.knn.fit(split)
        self.content.fit(split)
        return self

    def score(self, histories: list[History]) -> np.ndarray:
        collab = self.knn.score(histories)
        collab = collab / np.maximum(collab.max(axis=1, keepdims=True), 1e-12)
        return self.alpha * collab + (1 - self.alpha) * self.content.score(histories)


def choose_alpha(hybrid: HybridRecommender, split: RankingSplit,
                 grid: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                 metric: str = "ndcg@10") -> tuple[float, dict[float, float]]:
    """Pick alpha by `metric` on a validation split of the training histories; ties -> the
    smaller alpha. Leaves the hybrid fitted on the validation training part: refit before use."""
    validation = validation_split(split)
    hybrid.fit(validation)
    users = validation.eval_users()
    results = {}
    for alpha in grid:
        hybrid.alpha = alpha
        results[alpha] = evaluate_scores(lambda us: hybrid.score([validation.history(u) for u in us]),
                                         validation, users=users)[metric]
    best = max(grid, key=lambda a: (results[a], -a))
    hybrid.alpha = best
    return best, results
