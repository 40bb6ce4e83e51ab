"""The promotion gate of a retrain, and the scores it compares.

`score_model` scores a model on the original test split and the feedback holdout with the same
string-label metrics (new labels count as errors for a champion that cannot predict them);
`handover_rate` is the out-of-scope recall on out-of-scope feedback. `gate(champion, challenger,
margin, metric)` is pure: promote iff the challenger's holdout `metric` (accuracy; micro-F1 for a
multi-label retrain, core.mlops.retrain_multilabel) is higher and its original-test `metric` is at
least the champion's minus `margin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.data.multilabel import multi_hot
from core.data.splits import Split
from core.evaluation.metrics import classification_metrics
from core.evaluation.multilabel import multilabel_metrics, per_label_prf
from core.mlops.retrain_plan import FeedbackPlan

if TYPE_CHECKING:
    from core.data.splits import Split


# ---------------------------------------------------------------- the gate and the scores


def gate(champion: dict, challenger: dict, margin: float, metric: str = "accuracy") -> dict:
    """Promote iff challenger feedback-holdout `metric` > champion's and challenger original-test
    `metric` >= champion's - margin. `champion` / `challenger`: {"test": {metric}, "feedback_holdout":
    {"n", metric}} (as `score_model` returns; a multi-label retrain passes metric="micro_f1"). Pure."""
    held_c, held_n = champion.get("feedback_holdout", {}), challenger.get("feedback_holdout", {})
    test_c, test_n = champion["test"][metric], challenger["test"][metric]
    reasons = []
    if not held_n.get("n"):
        wins, gain = False, None
        reasons.append("no held-out feedback to judge the challenger on")
    else:
        gain = held_n[metric] - held_c[metric]
        wins = gain > 0
        reasons.append(f"feedback holdout {metric} {held_n[metric]:.4f} vs champion {held_c[metric]:.4f} "
                       f"on {held_n['n']} rows: {'better' if wins else 'not better'}")
    drop = test_c - test_n
    keeps = drop <= margin + 1e-12  # scores are ratios of counts: the epsilon only absorbs float rounding of the margin
    reasons.append(f"original test {metric} {test_n:.4f} vs champion {test_c:.4f}: drop {drop:+.4f}, "
                   f"{'within' if keeps else 'beyond'} the margin {margin:g}")
    return {"promote": bool(wins and keeps), "reasons": reasons, "margin": margin, "metric": metric,
            "feedback_gain": gain, "test_drop": drop}


def split_scores(model, split: Split, device: str = "cpu") -> dict:
    """n, accuracy, macro_f1 and per-label accuracy, comparing label strings (a label the model
    does not have counts as an error)."""
    if not len(split):
        return {"n": 0}
    pred = [model.labels[i] for i in model.predict_logits(split.texts, device=device).argmax(axis=1)]
    per_label = {}
    for label in sorted(set(split.labels)):
        rows = [p == label for p, t in zip(pred, split.labels) if t == label]
        per_label[label] = sum(rows) / len(rows)
    return {"n": len(split), **classification_metrics(np.asarray(split.labels), np.asarray(pred)),
            "per_label_accuracy": per_label}


def label_set_scores(true_sets, predicted, labels: list[str]) -> dict:
    """n, exact_set_accuracy, micro_f1, macro_f1 and per-label recall of `predicted` ([rows, labels]
    0/1, the model's decisions over its `labels`) against `true_sets` (tuples of label names). A true
    name outside `labels` (a new label the model does not know) is a column the model never
    predicts: every row holding it misses it. Pure."""
    present = sorted({name for names in true_sets for name in names})
    columns = list(labels) + [name for name in present if name not in set(labels)]
    y = multi_hot(true_sets, columns)
    pred = np.zeros(y.shape, dtype=bool)
    pred[:, :len(labels)] = np.asarray(predicted, dtype=bool).reshape(len(y), len(labels))
    recall = per_label_prf(y, pred)[1]
    return {**multilabel_metrics(y, pred), "per_label_recall": {name: float(recall[columns.index(name)])
                                                                for name in present}}


def handover_rate(model, split: Split, device: str = "cpu") -> dict | None:
    """Share of `split` (out-of-scope feedback) the model's OOS detector hands over; None without one."""
    if model.ood is None or not len(split):
        return None
    logits, embeddings = model.predict_all(split.texts, device=device)
    flags = model.ood.is_out_of_scope(logits, embeddings, model.temperature)
    return {"n": len(split), "out_of_scope_recall": float(np.mean(flags))}


def score_model(model, test: Split, plan: FeedbackPlan, device: str = "cpu") -> dict:
    out = {"test": split_scores(model, test, device), "feedback_holdout": split_scores(model, plan.holdout, device)}
    oos = handover_rate(model, plan.out_of_scope, device)
    return out | ({"feedback_out_of_scope": oos} if oos else {})
