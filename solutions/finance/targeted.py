"""Sentiment per company and per whole document, with the sentences that say why.

A sentence-level sentiment model (any model `solutions.finance.sentiment.score_texts` takes: a trained
run, its ONNX twin, the zero-shot baseline) scores each *sentence* of a document once; a company's
sentiment in the document is the aggregate over the sentences that mention it, so "Siemens rallies 6%.
Ocado drops 5%." gives Siemens positive and Ocado negative instead of one label for both, and a long
article is read whole instead of its first `max_length` tokens.

- Sentences (`split_sentences`): a break after `.`, `!` or `?` (and closing quotes/brackets) followed
  by whitespace and an upper-case letter, digit, quote, `$` or `(`; not after a known abbreviation
  (Inc., Corp., Ltd., Co., Mr., Dr., vs., e.g., i.e., U.S., ...) or a single capital (initials); line
  breaks with a blank line between them always break. Hand-written: the rule is short and stated here,
  whereas pysbd/blingfire/spaCy add a dependency (and spaCy a model download) for the same job on news
  prose. A sentence longer than `max_chars` is cut into windows of `max_chars` at whitespace, so a
  document with no punctuation is still read whole.
- Mentions: `solutions.finance.entities.EntityMatcher` (cashtags, watchlist names and aliases,
  whole words) applied per sentence; an entity given by name only (`entities=["Siemens"]`) matches that
  name as a whole word.
- Aggregate per (document, entity), documented: the confidence-weighted mean of the mentioning
  sentences' probability vectors, weight = the sentence's top probability (a confident sentence counts
  more than a hedged one); label = argmax of that mean; score = P(pos) - P(neg) of the mean. Evidence:
  the sentence that pulls hardest towards the label (its probability of the label times its weight)
  and the most negative sentence (the lowest score), each with its own label, score and character
  offsets [start, end) into the original text. A document's own aggregate is the same over all of its
  sentences (what a document that names no company gets).
- Bounded work: at most `max_sentences` sentences are scored per document (default 400, about 20,000
  words of news prose); the rest are counted in `sentences_dropped` and the result is flagged
  `truncated`, so a 1 MB text is bounded work and memory, never a silent drop. `sentences_scored`
  records how many were read.
Leaves out: training a target-aware model (entity markers in the input) and coreference ("the company",
"it"). The monitor stores these scores per (document, company) with their evidence
(solutions.finance.monitor.scoring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from core.foundation.errors import UserError
from solutions.finance.entities import EntityMatcher
from solutions.finance.sentiment import SENTIMENT_LABELS, score_texts

MAX_SENTENCES = 400
MAX_CHARS = 600  # a sentence longer than this is read in windows (about 120 words: within 128 tokens)
ABBREVIATIONS = frozenset("""inc corp ltd co plc llc ag sa nv mr mrs ms dr prof st vs etc e.g i.e u.s u.k
no jan feb mar apr jun jul aug sep sept oct nov dec est approx dept fig""".split())
_BREAK = re.compile(r"""(?<=[.!?])["'”’)\]]*\s+(?=["'“‘(\[$]?[A-Z0-9])|\n\s*\n""")


def _ends_with_abbreviation(chunk: str) -> bool:
    words = chunk.rstrip().split()
    if not words:
        return False
    last = words[-1].rstrip("\"'”’)]").lower()
    if not last.endswith("."):
        return False
    stem = last[:-1]
    return stem in ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())


def _windows(start: int, end: int, text: str, max_chars: int) -> list[tuple[int, int]]:
    """[start, end) cut at whitespace into pieces of at most `max_chars` characters."""
    spans = []
    while end - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars)
        cut = cut if cut > start else start + max_chars
        spans.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        spans.append((start, end))
    return spans


def split_sentences(text: str, max_chars: int = MAX_CHARS) -> list[tuple[int, int]]:
    """[start, end) character spans of the sentences of `text` (module docstring), whitespace trimmed."""
    spans, start = [], 0
    for match in _BREAK.finditer(text):
        paragraph = re.search(r"\n\s*\n", match.group(0)) is not None
        if not paragraph and _ends_with_abbreviation(text[start:match.start()]):
            continue
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.extend(_windows(s, e, text, max_chars))
    return out


@dataclass(frozen=True)
class Evidence:
    text: str
    start: int
    end: int
    label: str
    score: float

    def to_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end, "label": self.label,
                "score": round(self.score, 6)}


@dataclass(frozen=True)
class EntitySentiment:
    """One (document, entity) aggregate, or the document's own (`entity` None)."""

    entity: str | None
    label: str
    score: float
    probabilities: dict[str, float]
    sentences: int  # how many sentences mention it (all scored sentences for the document's own)
    evidence: list[Evidence] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"entity": self.entity, "label": self.label, "score": round(self.score, 6),
                "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
                "sentences": self.sentences, "evidence": [e.to_dict() for e in self.evidence]}


@dataclass(frozen=True)
class DocumentSentiment:
    document: EntitySentiment
    entities: dict[str, EntitySentiment]
    sentences_scored: int
    sentences_dropped: int

    @property
    def truncated(self) -> bool:
        return self.sentences_dropped > 0

    def to_dict(self) -> dict:
        return {"document": self.document.to_dict(), "entities": {k: v.to_dict() for k, v in self.entities.items()},
                "sentences_scored": self.sentences_scored, "sentences_dropped": self.sentences_dropped,
                "truncated": self.truncated}


def aggregate(entity: str | None, rows: list[int], probs: np.ndarray, spans: list[tuple[int, int]],
              text: str) -> EntitySentiment:
    """The confidence-weighted aggregate of sentences `rows` (module docstring); probs [n, 3] in SENTIMENT_LABELS order."""
    p = probs[rows]
    weights = p.max(axis=1)
    mean = (weights[:, None] * p).sum(axis=0) / max(float(weights.sum()), 1e-12)
    label_col = int(mean.argmax())
    scores = p[:, 2] - p[:, 0]
    picks = [int(np.argmax(p[:, label_col] * weights)), int(np.argmin(scores))]
    evidence = []
    for k in dict.fromkeys(picks):  # the strongest for the label, then the most negative (once if the same)
        start, end = spans[rows[k]]
        evidence.append(Evidence(text[start:end], start, end, SENTIMENT_LABELS[int(p[k].argmax())], float(scores[k])))
    return EntitySentiment(entity, SENTIMENT_LABELS[label_col], float(mean[2] - mean[0]),
                           dict(zip(SENTIMENT_LABELS, map(float, mean))), len(rows), evidence)


def entity_matcher(entities) -> EntityMatcher:
    """A matcher for `entities`: None (every cashtag), a list of names or tickers (each matching itself as a
    whole word, and a ticker also as a cashtag), a watchlist {TICKER: [name, alias, ...]}, or an
    EntityMatcher (the monitor's: its watchlist and every cashtag)."""
    if isinstance(entities, EntityMatcher):
        return entities
    if entities is None:
        return EntityMatcher({})
    if isinstance(entities, dict):
        return EntityMatcher(entities)
    if isinstance(entities, str) or not all(isinstance(e, str) and e.strip() for e in entities):
        raise UserError("entities: give a list of company names or tickers, a watchlist {TICKER: [names]}, or None")
    return EntityMatcher({e.strip(): [e.strip()] for e in entities})


def predict_entities(model, texts: list[str], entities=None, *, batch_size: int = 64,
                     max_sentences: int = MAX_SENTENCES) -> list[DocumentSentiment]:
    """Per text: its own sentiment and each mentioned entity's, with evidence (module docstring)."""
    if max_sentences < 1:
        raise UserError(f"max_sentences={max_sentences}: give at least 1")
    matcher = entity_matcher(entities)
    # given entities: only those are reported; None or a matcher: every entity found (cashtags included)
    wanted = None if entities is None or isinstance(entities, EntityMatcher) else set(matcher.watchlist)
    docs = []
    for text in texts:
        spans = split_sentences(text)
        docs.append((text, spans[:max_sentences], max(0, len(spans) - max_sentences)))
    flat = [text[s:e] for text, spans, _ in docs for s, e in spans]
    sentiment = score_texts(model, flat, batch_size=batch_size)
    probs = np.stack([sentiment.negative, sentiment.neutral, sentiment.positive], axis=1) if flat else np.zeros((0, 3))
    out, offset = [], 0
    for text, spans, dropped in docs:
        p = probs[offset:offset + len(spans)]
        offset += len(spans)
        if not spans:  # an empty or blank text: nothing to read
            neutral = EntitySentiment(None, "neutral", 0.0, {"negative": 0.0, "neutral": 1.0, "positive": 0.0}, 0)
            out.append(DocumentSentiment(neutral, {}, 0, dropped))
            continue
        mentions: dict[str, list[int]] = {}
        for row, (s, e) in enumerate(spans):
            for ticker in matcher.extract(text[s:e]):
                if wanted is None or ticker in wanted:
                    mentions.setdefault(ticker, []).append(row)
        document = aggregate(None, list(range(len(spans))), p, spans, text)
        # an entity named in every sentence has the document's aggregate: the same rows, the same arithmetic
        found = {t: replace(document, entity=t) if len(rows) == len(spans) else aggregate(t, rows, p, spans, text)
                 for t, rows in sorted(mentions.items())}
        out.append(DocumentSentiment(document, found, len(spans), dropped))
    return out
