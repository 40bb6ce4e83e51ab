"""Multi-intent routing: every intent above its threshold, each with its queue, and one policy
for a message that needs several queues.

A multi-label run (core.models.multilabel.MultiLabelHead) scores each intent with its own
calibrated sigmoid probability; an intent is in the message when that probability reaches the
intent's threshold (chosen on validation). The policy, for each text:
- intents above their thresholds, highest confidence first: the first is the primary intent; its
  queue is where the message goes (`queue`, `priority`, `reply`), and the other intents' queues,
  in confidence order without repeats or the primary queue, are `follow_up_queues` (the ticket is
  forwarded or split there after the primary queue has answered).
- no intent above its threshold: handed to the fallback queue, as `out_of_scope` when the
  out-of-scope scorer also puts the text far from every intent (or the run has no scorer), else as
  `low_confidence`. An intent above its threshold is routed even if the scorer finds the text
  unusual: a threshold cleared is evidence enough.
The response keeps every field of a single-label route (`intent` and `confidence` are the primary
intent's, or the most probable one's on a handover; `top_k` lists sigmoid probabilities) and adds
`multi_label: true`, `intents` (intent, confidence, threshold, queue, priority), `follow_up_queues` and
`set_confidence` (the calibrated probability that the whole predicted set is right: MultiLabelHead.
set_confidence; the accuracy estimator's score for a multi-label run).
Leaves out: the single-label router (solutions.support.router), which calls `route_multi`.
"""

from __future__ import annotations

import numpy as np


def route_multi(text: str, probs: np.ndarray, labels: list[str], head, table, *, in_scope_score: float | None,
                ood_threshold: float | None, use_out_of_scope: bool, top_k: int) -> dict:
    """One routed text (see the module docstring). `probs`: its calibrated per-label probabilities;
    `head`: a MultiLabelHead; `table`: a RoutingTable (route_for, fallback_queue)."""
    above = np.flatnonzero(probs >= head.thresholds)
    above = above[np.argsort(-probs[above], kind="stable")]
    order = np.argsort(-probs, kind="stable")
    primary = int(head.primary(probs[None, :])[0])  # = above[0], or order[0] when none clears
    reason = None
    if not len(above):
        score = None if in_scope_score is None else np.asarray([in_scope_score])
        far = bool(head.out_of_scope(probs[None, :], score, ood_threshold)[0])
        reason = "out_of_scope" if far and use_out_of_scope else "low_confidence"
    intents = []
    for i in above:
        route = table.route_for(labels[i])
        intents.append({"intent": labels[i], "confidence": round(float(probs[i]), 4),
                        "threshold": round(float(head.thresholds[i]), 4), "queue": route.queue,
                        "priority": route.priority})
    route = table.route_for(labels[primary])
    follow_ups = list(dict.fromkeys(r["queue"] for r in intents[1:] if r["queue"] != route.queue))
    return {"text": text, "intent": labels[primary], "confidence": round(float(probs[primary]), 4),
            "queue": table.fallback_queue if reason else route.queue, "priority": route.priority,
            "reply": None if reason else route.reply, "handover": reason is not None, "fallback_reason": reason,
            "in_scope_score": None if in_scope_score is None else round(float(in_scope_score), 4),
            "top_k": [{"intent": labels[i], "confidence": round(float(probs[i]), 4)} for i in order[:top_k]],
            "multi_label": True, "set_confidence": round(float(head.set_confidence(probs[None, :])[0]), 4),
            "intents": intents, "follow_up_queues": [] if reason else follow_ups}
