"""Scoring one batch of documents for the monitor: per document and per company it mentions.

Each document is read sentence by sentence (solutions.finance.targeted.predict_entities: sentences
scored in batches, at most MAX_SENTENCES per document, the rest counted as dropped). What is stored:
- the document's own score: the confidence-weighted aggregate over all its scored sentences, with
  `sentences` (scored), `sentences_dropped` and its evidence sentences;
- per company the document mentions (solutions.finance.entities: cashtags, watchlist names,
  the producer's own `tickers`): the aggregate over the sentences that name it, with `sentences`
  (how many) and its evidence (the sentence that pulls hardest towards its label and the most
  negative one, each with its own label, score and character offsets into the text). A company the
  document is about but no sentence names (only in the producer's `tickers`, or a name broken over
  a sentence boundary) gets the document's own score, with `sentences` 0.
The per-company rows are what timelines, aggregates and alerts read (store.py); the document row
is what a document that names no company has, and what the analyst's label corrects.

Isolation, as before: a batch the model fails on is scored one document at a time; a document whose
probabilities are not finite is a quarantine reason, not a row; only if the model also fails on a
plain probe text is the error raised (a broken model is not a bad line).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from solutions.finance.entities import EntityMatcher
from solutions.finance.monitor.sources import Document
from solutions.finance.sentiment import score_texts
from solutions.finance.targeted import EntitySentiment, predict_entities

PROBE_TEXT = "The company published its quarterly report."  # scored to tell a broken model from a bad line


@dataclass(frozen=True)
class Scored:
    document: dict  # p_negative, p_neutral, p_positive, score, label, sentences, sentences_dropped, evidence (JSON)
    entities: dict[str, dict]  # company -> p_negative, p_neutral, p_positive, score, label, sentences, evidence


def score_row(agg: EntitySentiment) -> dict:
    """An aggregate as a storable row (evidence as JSON text)."""
    p = agg.probabilities
    return {"p_negative": p["negative"], "p_neutral": p["neutral"], "p_positive": p["positive"],
            "score": agg.score, "label": agg.label, "sentences": agg.sentences,
            "evidence": json.dumps([e.to_dict() for e in agg.evidence], ensure_ascii=False)}


def score_documents(model, docs: list[Document], batch_size: int, matcher: EntityMatcher | None = None,
                    entities: list[tuple[str, ...]] | None = None) -> list[Scored | str]:
    """Per document: its Scored rows for itself and for each of `entities[i]` (the companies the monitor
    found in it), or the quarantine reason if it cannot be scored."""
    matcher = matcher or EntityMatcher({})
    entities = entities if entities is not None else [()] * len(docs)
    try:
        return _score(model, docs, batch_size, matcher, entities)
    except Exception as exc:  # noqa: BLE001 - find the document(s) the model fails on
        failure = exc
    if len(docs) > 1:
        return [row for doc, found in zip(docs, entities) for row in score_documents(model, [doc], 1, matcher, [found])]
    score_texts(model, [PROBE_TEXT], batch_size=1)  # raises if the model fails on a plain text too
    return [f"scoring failed: {type(failure).__name__}: {failure}"]


def _score(model, docs: list[Document], batch_size: int, matcher: EntityMatcher,
           entities: list[tuple[str, ...]]) -> list[Scored | str]:
    results = predict_entities(model, [d.text for d in docs], matcher, batch_size=batch_size)
    out: list[Scored | str] = []
    for result, found in zip(results, entities):
        aggregates = [result.document, *result.entities.values()]
        bad = next((a for a in aggregates if not all(math.isfinite(v) for v in a.probabilities.values())), None)
        if bad is not None:
            out.append(f"scoring failed: probabilities {tuple(bad.probabilities.values())} are not finite")
            continue
        document = score_row(result.document)
        own = {e: score_row(result.entities[e]) if e in result.entities else document | {"sentences": 0}
               for e in found}
        out.append(Scored(document | {"sentences_dropped": result.sentences_dropped}, own))
    return out
