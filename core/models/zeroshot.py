"""Zero-shot classification: compare a text's embedding with embeddings of label descriptions.

Each label has one or more descriptions (its name, a sentence describing it, templates such as
"This news is bad for the company."). They are embedded with the backbone's own pooling,
L2-normalised, averaged per label and normalised again (a label prototype). A text's class
probabilities are a softmax over its cosine similarities to the prototypes divided by a
temperature (cosines of sentence embeddings sit in a narrow band, so a small temperature such as
0.05 spreads them into usable probabilities). No training, no labelled data.

Same interface as a trained classifier (`.labels`, `.encode(texts, batch_size=...)`,
`.predict_proba(texts, batch_size=...)`), so products can fall back on it; texts are embedded by
core.models.encoder.SentenceEncoder like every other model's.
Leaves out: NLI-based zero-shot (a cross-encoder per label is too slow on CPU).
"""

from __future__ import annotations

import numpy as np

from core.foundation.errors import UserError
from core.models.backbones import load_backbone
from core.models.encoder import SentenceEncoder


def prototypes(description_embeddings: list[np.ndarray]) -> np.ndarray:
    """[n_labels, dim]: per label, the normalised mean of its normalised description embeddings."""
    rows = []
    for emb in description_embeddings:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        mean = emb.mean(axis=0)
        rows.append(mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(rows)


def zero_shot_probs(text_embeddings: np.ndarray, label_prototypes: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(cos(text, prototype) / temperature) per text; prototypes must be unit vectors."""
    x = text_embeddings / np.maximum(np.linalg.norm(text_embeddings, axis=1, keepdims=True), 1e-12)
    logits = (x @ label_prototypes.T) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


class ZeroShotClassifier:
    """`ZeroShotClassifier("minilm", {"positive": ["good news", ...], ...})`; labels keep dict order."""

    def __init__(self, backbone_name: str, descriptions: dict[str, list[str]], *, temperature: float = 0.05,
                 device: str = "cpu", batch_size: int = 64):
        if len(descriptions) < 2:
            raise UserError(f"zero-shot needs at least 2 labels with descriptions; got {len(descriptions)}")
        empty = [label for label, texts in descriptions.items() if not texts or not all(str(t).strip() for t in texts)]
        if empty:
            raise UserError(f"label '{empty[0]}' has no (or an empty) description; give each label one or "
                            f"more non-empty sentences")
        if temperature <= 0:
            raise UserError(f"temperature must be > 0; got {temperature}")

        self.backbone = load_backbone(backbone_name)
        self.backbone.encoder.to(device).eval()
        self.encoder = SentenceEncoder.from_backbone(self.backbone)
        self.labels = list(descriptions)
        self.temperature, self.device, self.batch_size = temperature, device, batch_size
        self.label_prototypes = prototypes([self.encode(list(descriptions[label])) for label in self.labels])
        self.ood = None  # no training data to fit an out-of-scope detector on

    def predict_all(self, texts: list[str], batch_size: int | None = None,
                    device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities to the label prototypes, embeddings): the logits of the Predictor
        contract, so softmax(logits / temperature) is `predict_proba`."""
        embeddings = self.encode(texts, batch_size, device) if texts else \
            np.zeros((0, self.label_prototypes.shape[1]), dtype=np.float32)
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return (unit @ self.label_prototypes.T).astype(np.float32), embeddings

    def predict_logits(self, texts: list[str], batch_size: int | None = None, device: str | None = None) -> np.ndarray:
        return self.predict_all(texts, batch_size, device)[0]

    def encode(self, texts: list[str], batch_size: int | None = None, device: str | None = None) -> np.ndarray:
        """Pooled (and, if the backbone does, normalised) embeddings in input order."""
        return self.encoder.encode(texts, batch_size=batch_size or self.batch_size, device=device or self.device)

    def predict_proba(self, texts: list[str], batch_size: int | None = None, device: str | None = None) -> np.ndarray:
        """[len(texts), n_labels]; `batch_size`/`device` default to the constructor's (the device the
        encoder was moved to). Same call as a trained classifier's, so products score both one way."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return zero_shot_probs(self.encode(texts, batch_size, device), self.label_prototypes, self.temperature)
