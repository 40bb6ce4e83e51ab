"""Splits and label maps: the in-memory shape of labelled data, and the seeded ways to cut it.

`Split` (texts + labels), `ClassificationData` (train / validation / test + labels + card),
`LabelMap` (label <-> id), `partition_label` and `set_aside_out_of_scope` (an out-of-scope label
set aside), `stratified_split` (a seeded, class-balanced cut; never mutates its input).
Leaves out: reading files and cards (core.data.catalog).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core.foundation.errors import UserError

# ---------------------------------------------------------------- examples and labels

@dataclass(frozen=True)
class Split:
    """Texts with their string labels (labels may be None for unlabelled text)."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> "Split":
        return Split(self.texts[:n], self.labels[:n])


@dataclass(frozen=True)
class ClassificationData:
    name: str
    labels: list[str]  # the label set, sorted; index = class id
    train: Split
    validation: Split
    test: Split
    extra: dict[str, Split] = field(default_factory=dict)  # more evaluation sets (e.g. test_allagree)
    card: dict | None = None

    def summary(self) -> dict:
        return {"name": self.name, "num_labels": len(self.labels), "train": len(self.train),
                "validation": len(self.validation), "test": len(self.test),
                **{k: len(v) for k, v in self.extra.items()}}


class LabelMap:
    """label string <-> class id, with an error that lists the known labels."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}

    def encode(self, labels: list[str]) -> list[int]:
        unknown = sorted({lab for lab in labels if lab not in self.index})
        if unknown:
            shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise UserError(f"{len(unknown)} label(s) never seen in training: {shown}. The model knows "
                            f"{len(self.labels)} labels: {', '.join(self.labels[:20])}"
                            f"{' ...' if len(self.labels) > 20 else ''}. Evaluate on data with those labels.")
        return [self.index[lab] for lab in labels]

    def decode(self, ids) -> list[str]:
        return [self.labels[int(i)] for i in ids]


def partition_label(split: Split, label: str) -> tuple[Split, Split]:
    """(rows with any other label, rows with `label`), each in input order."""
    keep = [i for i, lab in enumerate(split.labels) if lab != label]
    out = [i for i, lab in enumerate(split.labels) if lab == label]
    return (Split([split.texts[i] for i in keep], [split.labels[i] for i in keep]),
            Split([split.texts[i] for i in out], [split.labels[i] for i in out]))


def set_aside_out_of_scope(data: ClassificationData, label: str) -> tuple[ClassificationData, dict[str, int]]:
    """Rows labelled `label` (e.g. "oos", as in CLINC150) are not an intent to learn: they leave
    train, validation and test, so the classifier never gets an out-of-scope class (out-of-scope
    detection is the scorer's job, core.confidence.ood). Validation and test rows become the extra
    evaluation sets `oos_validation` and `oos_test` (AUROC and recalls in the report); training
    rows are set aside. Returns the new data and how many rows left each split."""
    parts, moved, extra = {}, {}, dict(data.extra)
    for name in ("train", "validation", "test"):
        parts[name], out = partition_label(getattr(data, name), label)
        if len(out):
            moved[name] = len(out)
            if name != "train":
                extra[f"oos_{name}"] = out
    if not moved:
        return data, {}
    labels = [lab for lab in data.labels if lab != label]
    return replace(data, labels=labels, extra=extra, **parts), moved


def stratified_split(split: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """(rest, held_out): about `fraction` of each label goes to held_out (at least 1 when a label
    has 2+ examples, none when it has 1). Order inside each part follows the input order."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_label.setdefault(label, []).append(i)
    held: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label]
        n_held = 0 if len(idx) < 2 else max(1, int(round(len(idx) * fraction)))
        held.update(rng.permutation(idx)[:n_held].tolist())
    rest = [i for i in range(len(split)) if i not in held]
    keep = sorted(held)
    return (Split([split.texts[i] for i in rest], [split.labels[i] for i in rest]),
            Split([split.texts[i] for i in keep], [split.labels[i] for i in keep]))


def classification_data(name: str, train: Split, validation: Split, test: Split,
                        extra: dict[str, Split] | None = None, card: dict | None = None) -> ClassificationData:
    """The ClassificationData a reader returns: the label set is the training labels, sorted."""
    labels = sorted(set(train.labels))
    if len(labels) < 2:
        raise UserError(f"dataset '{name}': training data has {len(labels)} distinct label(s); need 2 or more.")
    return ClassificationData(name, labels, train, validation, test, extra or {}, card)
