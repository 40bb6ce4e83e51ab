"""Choosing which queries a human should label next, and the labelling sheet for them.

`select_queries(model, source, budget, strategy=..., seed=..., labelled=...)` reads the distinct
unlabelled queries of a prediction log or a file (solutions.support.label_sources), leaves out the
texts already labelled (the log's own feedback and every `labelled` log or file), scores the rest
with the model (calibrated probabilities; the head's input embeddings for badge and coreset, with the
labelled texts' embeddings as coreset's first centres) and lets core.mlops.selection choose `budget`
of them. The result's `rows` are the sheet, one per pick in pick order (SHEET_COLUMNS): the text (or
only its hash, where the log keeps no texts), the request id to send feedback for, how often the
text occurred, the top two intents with their confidence, the strategy's score, the reason in plain
words, and an empty `label` column for the labeller.

A log that keeps only text hashes (served without --log-text) cannot be scored again: its queries
are ranked by the served model's logged confidence, lowest first (least-confidence sampling: the one
uncertainty the log keeps) for margin and entropy, drawn at random for random, and refused for badge
and coreset (they need the texts). Where a log keeps some texts, only those are scored.
Bounded work: at most `max_candidates` (MAX_CANDIDATES, 20,000) distinct texts are scored; from a
larger pool a seeded random sample is (the summary says how many of how many), so a month of traffic
costs minutes and about 30 MB of embeddings per 20,000 texts, not the whole log.
Leaves out: the strategies' maths (core.mlops.selection), reading sources (solutions.support.label_sources),
sending the labels back (POST /v1/feedback with the request id, or a labelled file for retraining).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.confidence.calibrate import softmax
from core.foundation.errors import UserError
from core.mlops.feedback import text_sha256
from core.mlops.prediction_logs import shown
from core.mlops.selection import Picks, Pool, check_budget, select, strategy
from solutions.support.label_sources import Candidates, labelled_texts, read_candidates

SHEET_COLUMNS = ("rank", "text", "text_sha256", "request_id", "model_version", "count", "intent", "confidence",
                 "runner_up", "runner_up_confidence", "strategy", "score", "reason", "label")
LEAST_CONFIDENCE = "least_confidence"
MAX_CANDIDATES = 20_000  # distinct texts scored at most; a larger pool is sampled (module docstring)


def check_sheet_path(path, overwrite: bool = False) -> Path:
    """`path` for a new sheet; an existing file (it may hold labels being filled in) only with `overwrite`."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists (it may hold labels being filled in); give another --out, or --overwrite")
    return path


@dataclass
class Selection:
    """The picks as sheet rows (SHEET_COLUMNS) and what was read: {"source", "rows_read" (logged
    predictions or query lines), "candidates" (distinct unlabelled texts), "skipped_labelled" (rows
    whose text is labelled), "duplicates" (further rows of a candidate's text), "not_scored" (distinct
    hash-only texts of a log that also keeps texts), "strategy", "seed", "picked"}."""

    rows: list[dict]
    summary: dict

    def write_csv(self, path, *, overwrite: bool = False) -> Path:
        """The sheet as CSV; an existing file (it may hold labels being filled in) only with `overwrite`."""
        path = check_sheet_path(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, SHEET_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _top_two(probs: np.ndarray, labels: list[str]) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:2]
    return [(labels[i], float(probs[i])) for i in order]


def _reason(name: str, probs: np.ndarray, labels: list[str], score: float, seed: int,
            thresholds: np.ndarray | None = None) -> str:
    """Why this query was picked, in plain words (`thresholds`: a multi-label run's)."""
    top = _top_two(probs, labels)
    predicted = f"predicted {top[0][0]} {top[0][1]:.2f}"
    if thresholds is not None and name in ("margin", "entropy"):
        closest = int(np.argmin(np.abs(probs - thresholds)))
        return (f"closest call: {labels[closest]} {probs[closest]:.2f} against its threshold {thresholds[closest]:.2f}"
                + (f" (margin {score:.2f})" if name == "margin" else f"; summed binary entropy {score:.2f}"))
    if name == "margin":
        second = f" / {top[1][0]} {top[1][1]:.2f}" if len(top) > 1 else ""
        return f"top two intents {top[0][0]} {top[0][1]:.2f}{second} (margin {score:.2f})"
    if name == "entropy":
        return (f"spread over many intents (entropy {score:.2f} of at most {math.log(len(labels)):.2f}); "
                + ", ".join(f"{label} {p:.2f}" for label, p in top))
    if name == "badge":
        return f"much to learn (gradient norm {score:.2f}) and unlike the queries picked before it; {predicted}"
    if name == "coreset":
        if math.isnan(score):
            return f"first pick (nothing labelled to cover yet); {predicted}"
        return f"far from every labelled or picked query (distance {score:.2f}); {predicted}"
    return f"random draw (seed {seed}); {predicted}"


def _row(candidates: Candidates, i: int, rank: int) -> dict:
    return {"rank": rank, "text": candidates.texts[i] or "", "text_sha256": candidates.hashes[i],
            "request_id": candidates.request_ids[i] or "", "model_version": candidates.versions[i] or "",
            "count": candidates.counts[i], "label": ""}


def _scored_rows(model, candidates: Candidates, name: str, picks: Picks, probs: np.ndarray, seed: int,
                 rows_of: list[int], thresholds: np.ndarray | None = None) -> list[dict]:
    rows = []
    for rank, (k, score) in enumerate(zip(picks.index, picks.score), 1):
        top = _top_two(probs[k], model.labels)
        runner = top[1] if len(top) > 1 else ("", float("nan"))
        rows.append(_row(candidates, rows_of[k], rank) | {
            "intent": top[0][0], "confidence": round(top[0][1], 4), "runner_up": runner[0],
            "runner_up_confidence": "" if math.isnan(runner[1]) else round(runner[1], 4), "strategy": name,
            "score": "" if math.isnan(score) else round(float(score), 4),
            "reason": _reason(name, probs[k], model.labels, float(score), seed, thresholds)})
    return rows


def _score_texts(model, candidates: Candidates, name: str, budget: int, seed: int, known: list[str],
                 max_candidates: int, multi_label=None):
    """Rows of the picks among the candidates that have a text, scored by the model (at most
    `max_candidates` of them: a seeded random sample of a larger pool, so time and memory stay bounded)."""
    rows_of = [i for i, t in enumerate(candidates.texts) if t is not None]
    if len(rows_of) > max_candidates:
        sample = np.random.default_rng(seed).choice(len(rows_of), max_candidates, replace=False)
        rows_of = [rows_of[k] for k in sorted(sample)]
    logits, embeddings = model.predict_all([candidates.texts[i] for i in rows_of])
    probs = (softmax(logits, model.temperature) if multi_label is None else
             multi_label.probabilities(logits, model.temperature))
    labelled = model.encode(known) if name == "coreset" and known else None
    thresholds = None if multi_label is None else multi_label.thresholds
    picks = select(name, Pool(probs, embeddings, labelled, thresholds), budget, np.random.default_rng(seed))
    return _scored_rows(model, candidates, name, picks, probs, seed, rows_of, thresholds)


def _rank_logged(candidates: Candidates, name: str, budget: int, seed: int) -> list[dict]:
    """A hash-only log: least confidence on the logged confidence (margin, entropy) or random."""
    if strategy(name).needs_embeddings:
        raise UserError(f"{shown(candidates.source)} keeps only text hashes (the service ran without --log-text), and "
                        f"strategy '{name}' needs the texts; use margin, entropy or random, serve with --log-text, "
                        f"or give the queries as a file")
    confidence = np.array([c for _, c in candidates.logged], dtype=np.float64)
    if name == "random":
        order, used = np.random.default_rng(seed).permutation(len(candidates))[:budget], "random"
    else:
        order, used = np.argsort(confidence, kind="stable")[:budget], LEAST_CONFIDENCE
    rows = []
    for rank, i in enumerate(order, 1):
        intent, conf = candidates.logged[i]
        reason = (f"random draw (seed {seed})" if used == "random" else
                  f"the served model ({candidates.versions[i]}) was only {conf:.2f} sure of {intent}")
        rows.append(_row(candidates, i, rank) | {
            "intent": intent, "confidence": round(conf, 4), "runner_up": "", "runner_up_confidence": "",
            "strategy": used, "score": "" if used == "random" else round(conf, 4),
            "reason": reason + "; the log keeps only this text's hash: find the text by its request_id"})
    return rows


def select_queries(model, source, budget: int, *, strategy_name: str = "margin", seed: int = 0,
                   labelled=(), text_column: str = "text", max_candidates: int = MAX_CANDIDATES,
                   multi_label=None) -> Selection:
    """Choose `budget` queries of `source` for a human to label (see the module docstring). `model`: a
    core.models.predictor.Predictor; `labelled`: paths of prediction logs or files of labelled texts;
    `multi_label`: a multi-label run's head (core.models.multilabel.MultiLabelHead): its sigmoid
    probabilities and thresholds are what the strategies read (core.mlops.selection)."""
    strategy(strategy_name)
    budget = check_budget(budget)
    if max_candidates < budget:
        raise UserError(f"max_candidates={max_candidates} is below the budget {budget}: score at least as many "
                        f"queries as you want picked")
    candidates = read_candidates(source, text_column)
    known = labelled_texts(list(labelled) + ([candidates.source] if candidates.from_log else []), text_column)
    candidates = candidates.without({text_sha256(t) for t in known})
    if not len(candidates):
        raise UserError(f"every query in {shown(source)} is labelled already: nothing to choose from")
    with_text = sum(t is not None for t in candidates.texts)
    if with_text:
        rows = _score_texts(model, candidates, strategy_name, budget, seed, known, max_candidates, multi_label)
    else:
        rows = _rank_logged(candidates, strategy_name, budget, seed)
    summary = {"source": shown(source), "rows_read": candidates.rows, "candidates": len(candidates),
               "skipped_labelled": candidates.skipped_labelled, "duplicates": sum(candidates.counts) - len(candidates),
               "not_scored": len(candidates) - with_text if with_text else 0,
               "sampled_from": with_text if with_text > max_candidates else None,
               "scored": min(with_text, max_candidates),
               "strategy": rows[0]["strategy"] if rows else strategy_name, "seed": seed, "picked": len(rows)}
    return Selection(rows, summary)
