"""What a retrain learns from: its settings, and the plan that turns feedback into training,
early-stopping, holdout and out-of-scope rows.

`plan_feedback` deduplicates the feedback by text (latest label wins), removes texts of the
original test split, sets "out_of_scope" rows aside, keeps new labels that have enough examples,
and splits the rest with a seed; texts the champion's lineage already learnt
(`feedback_trained.json`: sha256 only) go to train, never to the holdout. Labels `a|b` (several
intents, from POST /v1/feedback "intents"): with `multi_label=True` (a multi-label run) each is
the set {a, b}; otherwise those rows are skipped and counted (a softmax model predicts one label
per text). `replay_rows` picks original training rows per label to replay beside the feedback.
Leaves out: training and the gate (core.mlops.retrain, core.mlops.gate).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from core.data.multilabel import LABEL_SEPARATOR, parse_label_list
from core.data.splits import Split, stratified_split
from core.foundation.errors import UserError
from core.foundation.settings import checked, setting
from core.mlops.feedback import LABEL_OUT_OF_SCOPE, text_sha256
from core.runs.rundir import write_report


@dataclass(frozen=True)
class RetrainSettings:
    holdout_fraction: float = setting(0.3, positive=True, below=1, hint="a share of the feedback")
    replay_ratio: float = setting(4.0, minimum=0)  # replayed original rows per feedback row; 0 = none
    min_examples_new_label: int = setting(8, positive=True)  # a new label with fewer feedback rows is dropped
    margin: float = setting(0.01, minimum=-1, maximum=1)  # max drop in original test accuracy the gate allows
    steps: int | None = setting(None, positive=True)  # optimizer steps; None = the recipe's schedule on the mix
    seed: int = setting(0, minimum=0)
    validation_fraction: float = setting(0.2, minimum=0, below=1, hint="a share of feedback-train")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                kind = int if f.name in ("min_examples_new_label", "steps", "seed") else float
                object.__setattr__(self, f.name, checked(f.name, value, kind, f))

    @classmethod
    def from_overrides(cls, overrides: dict) -> "RetrainSettings":
        """`key=value` settings (strings from the command line, or values); UserError for unknown keys."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise UserError(f"unknown retrain setting '{unknown[0]}'; valid keys: {', '.join(names)}")
        values = {k: (None if k == "steps" and str(v).lower() in ("", "none", "0") else v) for k, v in overrides.items()}
        return cls(**values)


@dataclass(frozen=True)
class FeedbackPlan:
    """What the feedback becomes: training rows, an early-stopping slice, the holdout, OOS rows."""

    train: Split
    validation: Split
    holdout: Split
    out_of_scope: Split
    new_labels: list[str]
    dropped_labels_too_few: dict[str, int]
    counts: dict = field(default_factory=dict)


def _split(texts, labels) -> Split:
    return Split(list(texts), list(labels))


def concat_splits(*parts: Split) -> Split:
    return _split([t for p in parts for t in p.texts], [lab for p in parts for lab in p.labels])


TRAINED_FILE = "feedback_trained.json"  # in a retrained run: sha256 of every feedback text its lineage learnt from


def trained_feedback(run_dir: Path) -> frozenset[str]:
    """The sha256 of the feedback texts `run_dir` and its ancestors trained or early-stopped on."""
    path = Path(run_dir) / TRAINED_FILE
    return frozenset(json.loads(path.read_text())["sha256"]) if path.is_file() else frozenset()


def write_trained_feedback(out: Path, inherited: frozenset[str], plan: "FeedbackPlan") -> None:
    used = set(inherited) | {text_sha256(t.strip()) for t in plan.train.texts + plan.validation.texts}
    (Path(out) / TRAINED_FILE).write_text(json.dumps({"sha256": sorted(used)}))


def say(progress: bool, message: str) -> None:
    if progress:
        print(f"retrain: {message}", file=sys.stderr, flush=True)


def close_retrain(out: Path, report: dict, section: dict, *, cost, train_seconds: float, started: float, renderer,
                  inherited: frozenset[str], plan: "FeedbackPlan", progress: bool) -> dict:
    """The end of a retrain, single- or multi-label: the cost section, the report written again with the
    retrain section complete, the feedback texts used recorded, the gate's decision said."""
    section["cost"] = {"train_seconds": round(train_seconds, 2), "cpu_seconds": cost.cpu_seconds,
                       "wall_seconds": cost.wall_seconds, "total_wall_seconds": round(time.perf_counter() - started, 2)}
    write_report(out, report, renderer)
    write_trained_feedback(out, inherited, plan)
    verdict = section["gate"]
    say(progress, f"gate: {'promote' if verdict['promote'] else 'keep the champion'} ({'; '.join(verdict['reasons'])})")
    return report


def label_names(label: str, multi_label: bool) -> tuple[str, ...] | None:
    """The label names of one feedback label: a multi-label run reads `a|b` as two names (None when
    the list breaks the label rule); a single-label run keeps the label whole."""
    if not multi_label:
        return (label,)
    try:
        names = parse_label_list(label, "feedback label")
    except UserError:
        return None
    return None if LABEL_OUT_OF_SCOPE in names and len(names) > 1 else names  # out of scope is a row's only label


def _latest_per_text(feedback, multi_label: bool) -> tuple[dict, int]:
    """text -> its latest valid feedback example, and how many examples were invalid."""
    latest: dict[str, object] = {}
    invalid = 0
    for example in feedback:
        text, label = getattr(example, "text", None), getattr(example, "label", None)
        if not isinstance(text, str) or not text.strip() or not isinstance(label, str) or not label.strip() \
                or label_names(label, multi_label) is None:
            invalid += 1
            continue
        key = text.strip()
        if key not in latest or example.ts >= latest[key].ts:
            latest[key] = example
    return latest, invalid


def plan_feedback(feedback, known_labels: list[str], test_texts: list[str], settings: RetrainSettings,
                  trained: frozenset[str] = frozenset(), *, multi_label: bool = False) -> FeedbackPlan:
    """Deduplicate, drop test texts, set out-of-scope rows aside, keep new labels with enough
    examples, and split (seeded, stratified by the whole label) into train / validation / holdout;
    texts in `trained` (sha256, what the champion's lineage already learnt from) always go to train,
    never to the holdout. `multi_label`: a label `a|b` is the label set {a, b} (a new name counts
    once per row that holds it; a row with a dropped name is dropped whole); without it such rows
    are set aside and counted (`several_labels_skipped`): a softmax model predicts one label per
    text. See the module docstring."""
    latest, invalid = _latest_per_text(feedback, multi_label)
    valid = len(feedback) - invalid
    test = {t.strip() for t in test_texts}
    known = set(known_labels)
    # a|b on a single-label run is several intents, unless the run has a label named so itself
    several = {key for key, e in latest.items() if key not in test and not multi_label
               and LABEL_SEPARATOR in e.label and e.label not in known}
    kept = [e for key, e in latest.items() if key not in test and key not in several]
    oos = [e for e in kept if e.label == LABEL_OUT_OF_SCOPE]
    in_scope = [e for e in kept if e.label != LABEL_OUT_OF_SCOPE]
    by_label: dict[str, int] = {}
    for e in in_scope:
        for name in label_names(e.label, multi_label):
            by_label[name] = by_label.get(name, 0) + 1
    new = sorted(lab for lab, n in by_label.items() if lab not in known and n >= settings.min_examples_new_label)
    dropped = {lab: n for lab, n in sorted(by_label.items()) if lab not in known and lab not in new}
    usable = [e for e in in_scope if not set(label_names(e.label, multi_label)) & set(dropped)]
    seen = [e for e in usable if text_sha256(e.text.strip()) in trained]
    fresh = [e for e in usable if text_sha256(e.text.strip()) not in trained]
    rng = np.random.default_rng(settings.seed)
    rest, holdout = stratified_split(_split([e.text for e in fresh], [e.label for e in fresh]),
                                     settings.holdout_fraction, rng)
    train, validation = (stratified_split(rest, settings.validation_fraction, rng) if settings.validation_fraction
                         else (rest, _split([], [])))
    train = concat_splits(train, _split([e.text for e in seen], [e.label for e in seen]))
    counts = {"total": len(feedback), "invalid": invalid, "duplicates": valid - len(latest),
              "in_original_test": len(latest) - len(kept) - len(several), "out_of_scope": len(oos),
              "dropped_too_few": len(in_scope) - len(usable), "train": len(train), "validation": len(validation),
              "holdout": len(holdout), "already_learnt": len(seen), "by_label": dict(sorted(by_label.items()))}
    if not multi_label:
        counts["several_labels_skipped"] = len(several)
    return FeedbackPlan(train, validation, holdout, _split([e.text for e in oos], [e.label for e in oos]),
                        new, dropped, counts)


def plan_summary(counts: dict) -> str:
    """The plan's counts in one progress line."""
    c = counts
    several = c.get("several_labels_skipped")
    return (f"{c['total']} feedback rows: {c['train']} train, {c['validation']} early-stopping, "
            f"{c['holdout']} held out, {c['out_of_scope']} out-of-scope (evaluated only), "
            f"{c['duplicates']} duplicates, {c['in_original_test']} in the original test split, "
            f"{c['dropped_too_few']} of new labels with too few examples"
            + (f", {several} with several labels skipped (a single-label run predicts one label per text: train "
               f"a multi-label recipe, task multilabel-classification, to learn them)" if several else ""))


def require_training_rows(plan: FeedbackPlan) -> None:
    """UserError when the plan leaves nothing to train on, saying why."""
    if len(plan.train):
        return
    several = plan.counts.get("several_labels_skipped")
    raise UserError(f"no feedback left to train on after setting aside holdout, out-of-scope and dropped rows "
                    f"({plan.counts}); collect more labelled feedback"
                    + (f". {several} rows carry several labels (a|b), which a single-label run cannot learn: train "
                       f"a multi-label recipe (task multilabel-classification) and retrain that run" if several else ""))


def replay_rows(train: Split, n: int, rng: np.random.Generator) -> Split:
    """About `n` rows of the original training split, stratified by label (every label with 2+ rows
    keeps at least one), capped at the whole split."""
    if n <= 0:
        return _split([], [])
    if n >= len(train):
        return train
    return stratified_split(train, n / len(train), rng)[1]



