"""Financial sentiment from a loaded classifier: P(negative), P(neutral), P(positive) and the
score P(pos) - P(neg) in [-1, 1] (FinBERT's convention). Works with any model that has `.labels`
and `.predict_proba(texts, batch_size=...)`: a trained run (core.models.classifier.load_classifier, its ONNX twin
core.export.onnx) or core.models.zeroshot, all of them batching texts by length through core.models.encoder.
Leaves out: training (the finance/sentiment-* recipes) and aggregation (solutions.finance.monitor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.foundation.errors import UserError

SENTIMENT_LABELS = ("negative", "neutral", "positive")

# For the zero-shot baseline: several descriptions per label, averaged into one prototype.
ZERO_SHOT_DESCRIPTIONS = {
    "negative": ["negative", "This is bad news for the company.",
                 "Sales, profit or the share price fell.",
                 "The company reported a loss, a decline, job cuts or a downgrade."],
    "neutral": ["neutral", "This is a neutral, factual statement about a company.",
                "The company announced routine business information.",
                "A description of the company's products, location or operations."],
    "positive": ["positive", "This is good news for the company.",
                 "Sales, profit or the share price rose.",
                 "The company reported growth, a gain, an increase or a new contract."],
}


@dataclass(frozen=True)
class Sentiment:
    negative: np.ndarray  # P(negative) per text
    neutral: np.ndarray
    positive: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """P(pos) - P(neg), in [-1, 1]."""
        return self.positive - self.negative

    @property
    def label(self) -> list[str]:
        stacked = np.stack([self.negative, self.neutral, self.positive], axis=1)
        return [SENTIMENT_LABELS[i] for i in stacked.argmax(axis=1)]


def sentiment_columns(labels: list[str]) -> list[int]:
    """Column of negative, neutral, positive in a model's label list; UserError if one is missing."""
    missing = [name for name in SENTIMENT_LABELS if name not in labels]
    if missing:
        raise UserError(f"the model's labels are {labels}; a sentiment model needs {list(SENTIMENT_LABELS)} "
                        f"(missing {missing}). Train one with `verticals train finance/sentiment-full`.")
    return [labels.index(name) for name in SENTIMENT_LABELS]


def sentiment_from_probs(probs: np.ndarray, labels: list[str]) -> Sentiment:
    cols = sentiment_columns(labels)
    return Sentiment(*(probs[:, c].astype(np.float64) for c in cols))


def score_texts(model, texts: list[str], batch_size: int = 64) -> Sentiment:
    """Sentiment of each text with a loaded classifier (batches of up to `batch_size` texts)."""
    if not texts:
        return Sentiment(*(np.zeros(0) for _ in SENTIMENT_LABELS))
    probs = model.predict_proba(list(texts), batch_size=batch_size)
    return sentiment_from_probs(np.asarray(probs), list(model.labels))
