"""The intent router: text -> intent, calibrated confidence, queue, alternatives, and a reason to
hand over to a human when the model should not decide.

Fallback reasons, checked in this order:
- `out_of_scope`: the out-of-scope score (fitted at training time, see core.confidence.ood) is below the
  threshold chosen on validation for the target in-scope recall.
- `low_confidence`: the calibrated top probability is below `min_confidence`.
- `ambiguous`: the top two probabilities are closer than `min_margin`.
Defaults follow Rasa's FallbackClassifier shape (threshold, ambiguity margin) but on temperature-
scaled probabilities, so the numbers mean what they say. All are configurable.
A multi-label run (model/multilabel.json) routes through solutions.support.multi_intent instead:
every intent above its threshold, the primary queue and follow-up queues; same fields plus a few.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.confidence.calibrate import softmax
from core.foundation.errors import UserError
from core.foundation.settings import read_yaml_mapping
from core.models.multilabel import load_multilabel_head
from core.models.predictor import load_run, model_dir
from solutions.support.multi_intent import route_multi

FALLBACK_REASONS = ("out_of_scope", "low_confidence", "ambiguous")
LABEL_KEY = "intent"  # a route row's predicted label, as the prediction log and the drift window are told
MULTI_LABEL_KEY = "intents"  # a multi-label route's predicted intents (each with LABEL_KEY), for the drift window


@dataclass(frozen=True)
class Route:
    queue: str
    priority: str = "normal"
    reply: str | None = None


@dataclass(frozen=True)
class RouterSettings:
    min_confidence: float = 0.5
    min_margin: float = 0.1
    use_out_of_scope: bool = True
    top_k: int = 3


@dataclass
class RoutingTable:
    """intent -> Route; intents without a row go to `default_queue`. Handovers go to `fallback_queue`."""

    routes: dict[str, Route] = field(default_factory=dict)
    default_queue: str = "general"
    fallback_queue: str = "human"

    @classmethod
    def from_yaml(cls, path: Path, known_intents: list[str]) -> "RoutingTable":
        raw = read_yaml_mapping(path, "routing table", "with routes: {intent: {queue, priority, reply}}")
        allowed = {"routes", "default_queue", "fallback_queue"}
        if set(raw) - allowed:
            raise UserError(f"routing table {path}: top-level keys must be among {', '.join(sorted(allowed))}")
        routes = {}
        for intent, row in (raw.get("routes") or {}).items():
            if intent not in known_intents:
                raise UserError(f"routing table {path}: intent '{intent}' is not one the model predicts; "
                                f"known intents: {', '.join(known_intents[:30])}{' ...' if len(known_intents) > 30 else ''}")
            row = {"queue": row} if isinstance(row, str) else dict(row or {})
            if "queue" not in row or set(row) - {"queue", "priority", "reply"}:
                raise UserError(f"routing table {path}: intent '{intent}' needs `queue` "
                                f"(and optionally `priority`, `reply`)")
            routes[intent] = Route(**{k: str(v) for k, v in row.items()})
        return cls(routes, str(raw.get("default_queue", "general")), str(raw.get("fallback_queue", "human")))

    def route_for(self, intent: str) -> Route:
        return self.routes.get(intent, Route(self.default_queue))


def fallback_reason(probs: np.ndarray, in_scope_score: float | None, ood_threshold: float | None,
                    settings: RouterSettings) -> str | None:
    """Why this prediction should go to a human, or None. `probs` is one calibrated row."""
    top = np.sort(probs)[::-1]
    if settings.use_out_of_scope and in_scope_score is not None and in_scope_score < ood_threshold:
        return "out_of_scope"
    if top[0] < settings.min_confidence:
        return "low_confidence"
    if len(top) > 1 and top[0] - top[1] < settings.min_margin:
        return "ambiguous"
    return None


class IntentRouter:
    """Routes texts with any core.models.predictor.Predictor (PyTorch, ONNX fp32/int8, zero-shot)."""

    def __init__(self, model, table: RoutingTable | None = None, settings: RouterSettings = RouterSettings(),
                 multi_label=None):
        """`multi_label`: the run's core.models.multilabel.MultiLabelHead (None: a single-label run)."""
        self.model, self.table, self.settings = model, table or RoutingTable(), settings
        self.multi_label = multi_label

    @classmethod
    def from_run(cls, run_dir: Path, table_path: Path | None = None, settings: RouterSettings = RouterSettings(),
                 runtime: str = "torch", threads: int | None = None):
        """`runtime`: torch (LoRA merged), onnx or onnx-int8 (ONNX Runtime; needs `verticals export
        onnx [--int8]` first). `threads`: ONNX Runtime intra-op threads (None = all cores)."""
        model = load_run(run_dir, runtime, threads=threads)
        table = RoutingTable.from_yaml(table_path, model.labels) if table_path else None
        return cls(model, table, settings, load_multilabel_head(model_dir(run_dir)))

    def route_batch(self, texts: list[str]) -> list[dict]:
        return self.route_all(texts)[0]

    def route_all(self, texts: list[str]) -> tuple[list[dict], np.ndarray]:
        """(routes, pooled embeddings [n, dim]) from one pass: the service feeds the embeddings
        to its drift window (core.evaluation.drift) without encoding twice."""
        logits, embeddings = self.model.predict_all(texts)
        scores, threshold = [None] * len(texts), None
        if self.model.ood is not None:
            threshold = self.model.ood.threshold
            scores = self.model.ood.scores(logits, embeddings, self.model.temperature)
        if self.multi_label is not None:
            probs = self.multi_label.probabilities(logits, self.model.temperature)
            return [route_multi(text, p, self.model.labels, self.multi_label, self.table,
                                in_scope_score=None if s is None else float(s), ood_threshold=threshold,
                                use_out_of_scope=self.settings.use_out_of_scope, top_k=self.settings.top_k)
                    for text, p, s in zip(texts, probs, scores)], embeddings
        probs = softmax(logits, self.model.temperature)
        out = []
        for text, p, score in zip(texts, probs, scores):
            order = np.argsort(-p)[: self.settings.top_k]
            intent = self.model.labels[order[0]]
            reason = fallback_reason(p, None if score is None else float(score), threshold, self.settings)
            route = self.table.route_for(intent)
            out.append({
                "text": text, "intent": intent, "confidence": round(float(p[order[0]]), 4),
                "queue": self.table.fallback_queue if reason else route.queue,
                "priority": route.priority, "reply": None if reason else route.reply,
                "handover": reason is not None, "fallback_reason": reason,
                "in_scope_score": None if score is None else round(float(score), 4),
                "top_k": [{"intent": self.model.labels[i], "confidence": round(float(p[i]), 4)} for i in order],
            })
        return out, embeddings

    def route(self, text: str) -> dict:
        return self.route_batch([text])[0]

    def describe(self) -> dict:
        ood = self.model.ood
        return {"labels": len(self.model.labels), "temperature": self.model.temperature,
                "out_of_scope": None if ood is None else ood.describe(),
                "settings": asdict(self.settings), **({"multi_label": True} if self.multi_label else {}),
                "default_queue": self.table.default_queue,
                "fallback_queue": self.table.fallback_queue}
