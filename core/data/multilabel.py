"""Multi-label data: rows that carry one or more labels ("cancel my order and refund the card").

A row's labels come from a `labels` column: `a|b` in a CSV/TSV cell, a JSON list (or an `a|b`
string) in JSONL. A file with a plain `label` column reads as one label per row, so single-label
data trains with the multi-label recipe too; a file (or a JSONL row) with both columns is refused,
as is, per row: an empty list, more than MAX_LABELS_PER_ROW labels, the same label twice, and any
name that breaks the label rule (core.foundation.labels.check_label_name). Validation and test may
only use labels the training split has. Everything is checked before a run directory is touched.
`load_multilabel(spec)` reads the same sources as core.data.catalog.load_classification (a file,
a folder of train/validation/test files, or a catalog card; a card with `format.labels_column`
is multi-label) into MultiLabelData, whose `summary()` says how many rows of each split carry
several labels.
Leaves out: single-label readers (core.data.catalog) and multi-hot encoding for training
(core.models.multilabel).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.data.catalog import (
    data_root,
    list_cards,
    load_card,
    load_classification,
    read_records,
    read_split_folder,
    verified_file,
)
from core.data.splits import Split, stratified_split
from core.foundation.errors import UserError
from core.foundation.labels import check_label_name

MAX_LABELS_PER_ROW = 20  # a support message with more intents than this is not a routing problem
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class MultiLabelSplit:
    """Texts, each with its tuple of one or more label names (in the order the data gave them)."""

    texts: list[str]
    label_sets: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.texts)

    def multi_label_rows(self) -> int:
        return sum(len(s) > 1 for s in self.label_sets)

    def subset(self, rows) -> "MultiLabelSplit":
        return MultiLabelSplit([self.texts[i] for i in rows], [self.label_sets[i] for i in rows])


@dataclass(frozen=True)
class MultiLabelData:
    name: str
    labels: list[str]  # sorted union of the training rows' labels; index = head output
    train: MultiLabelSplit
    validation: MultiLabelSplit
    test: MultiLabelSplit
    extra: dict[str, MultiLabelSplit] = field(default_factory=dict)
    card: dict | None = None

    def summary(self) -> dict:
        splits = {"train": self.train, "validation": self.validation, "test": self.test, **self.extra}
        return {"name": self.name, "num_labels": len(self.labels), **{k: len(v) for k, v in splits.items()},
                "multi_label_rows": {k: v.multi_label_rows() for k, v in splits.items()}}


def parse_label_list(value, where: str) -> tuple[str, ...]:
    """One row's labels: an `a|b` string or a list of strings, each checked by the label rule."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(LABEL_SEPARATOR)] if value.strip() else []
    elif isinstance(value, list):
        names = value
    else:
        raise UserError(f"{where}: labels must be a list of label names or an 'a|b' string, got "
                        f"{type(value).__name__}")
    if not names:
        raise UserError(f"{where}: empty label list; give at least one label or remove the row")
    if len(names) > MAX_LABELS_PER_ROW:
        raise UserError(f"{where}: {len(names)} labels on one row; at most {MAX_LABELS_PER_ROW}")
    for name in names:
        check_label_name(name, where)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{where}: label {repeated[0]!r} appears more than once in the row's labels")
    return tuple(names)


def records_to_multilabel_split(rows: list[dict], path: Path, text_column: str = "text",
                                labels_column: str = "labels", label_column: str = "label") -> MultiLabelSplit:
    """Rows (core.data.catalog.read_records) -> MultiLabelSplit, from `labels_column` or, when the
    file has none, one label per row from `label_column`; never both."""
    first = 2 if path.suffix.lower() != ".jsonl" else 1
    texts, sets = [], []
    for n, row in enumerate(rows, first):
        where = f"{path}, row {n}"
        if labels_column in row and label_column in row:
            raise UserError(f"{where}: has both a '{labels_column}' and a '{label_column}' column; give every "
                            f"row's labels in '{labels_column}' (a|b, or a JSON list) and drop '{label_column}'")
        if labels_column not in row and label_column not in row:
            raise UserError(f"{where}: no '{labels_column}' or '{label_column}' column; its columns are: "
                            f"{', '.join(map(str, row))}")
        text = str(row.get(text_column) or "").strip()
        if not text:
            raise UserError(f"{where}: empty '{text_column}'. Fill it in or remove the row.")
        if labels_column in row:
            sets.append(parse_label_list(row[labels_column], where))
        else:
            value = row[label_column]
            sets.append((check_label_name("" if value is None else str(value).strip(), where),))
        texts.append(text)
    return MultiLabelSplit(texts, sets)


def from_single(split: Split) -> MultiLabelSplit:
    return MultiLabelSplit(list(split.texts), [(check_label_name(lab, "label"),) for lab in split.labels])


def split_multilabel(split: MultiLabelSplit, fraction: float, rng: np.random.Generator):
    """(rest, held_out), stratified by each row's first label (core.data.splits.stratified_split)."""
    proxy = Split([str(i) for i in range(len(split))], [s[0] for s in split.label_sets])
    rest, held = stratified_split(proxy, fraction, rng)
    return split.subset([int(i) for i in rest.texts]), split.subset([int(i) for i in held.texts])


def multilabel_data(name: str, train, validation, test, extra=None, card=None) -> MultiLabelData:
    """The label set is the training labels, sorted; other splits may use only those."""
    labels = sorted({lab for s in train.label_sets for lab in s})
    if len(labels) < 2:
        raise UserError(f"dataset '{name}': training data has {len(labels)} distinct label(s); need 2 or more.")
    known = set(labels)
    for split_name, split in (("validation", validation), ("test", test)):
        unknown = sorted({lab for s in split.label_sets for lab in s} - known)
        if unknown:
            raise UserError(f"dataset '{name}': the {split_name} split has unknown labels (not in training): "
                            f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}")
    return MultiLabelData(name, labels, train, validation, test, extra or {}, card)


def _load_own(path: Path, text_column: str, labels_column: str, label_column: str, encoding: str) -> MultiLabelData:
    def load(p: Path) -> MultiLabelSplit:
        return records_to_multilabel_split(read_records(p, encoding), p, text_column, labels_column, label_column)

    rng = np.random.default_rng(0)  # the same seed and shares as core.data.catalog's own-file reader
    if path.is_file():
        rest, test = split_multilabel(load(path), 0.1, rng)
        train, validation = split_multilabel(rest, 0.1 / 0.9, rng)
        return multilabel_data(path.stem, train, validation, test)
    return multilabel_data(path.name, *read_split_folder(path, load, split_multilabel, rng))


def _load_card(card: dict, root: Path) -> MultiLabelData:
    """A card whose format names a `labels_column`: one file per split, validation carved from train."""
    fmt = card["format"]

    def load(filename: str) -> MultiLabelSplit:
        path = verified_file(card, filename, root)
        return records_to_multilabel_split(read_records(path, fmt.get("encoding", "utf-8")), path,
                                           fmt.get("text_column", "text"), fmt["labels_column"],
                                           fmt.get("label_column", "label"))

    splits = {name: load(filename) for name, filename in card["splits"].items()}
    if "validation" not in splits:
        rule = card["validation_from_train"]
        splits["train"], splits["validation"] = split_multilabel(splits["train"], rule["fraction"],
                                                                 np.random.default_rng(rule["seed"]))
    extra = {name: load(filename) for name, filename in (card.get("extra") or {}).items()}
    return multilabel_data(card["name"], splits["train"], splits["validation"], splits["test"], extra, card)


def is_multilabel_card(card: dict) -> bool:
    return bool((card.get("format") or {}).get("labels_column"))


def load_multilabel(spec: str, *, root=None, text_column: str = "text", labels_column: str = "labels",
                    label_column: str = "label", encoding: str = "utf-8") -> MultiLabelData:
    """A file, folder or catalog name (see the module docstring) as MultiLabelData. A single-label
    card is read by its own reader and each row gets its one label."""
    path = Path(spec).expanduser()
    if path.exists():
        return _load_own(path, text_column, labels_column, label_column, encoding)
    name = spec.partition(":")[0]
    if name in list_cards() and is_multilabel_card(load_card(name)):
        return _load_card(load_card(name), data_root(root))
    single = load_classification(spec, root=root, text_column=text_column, label_column=label_column,
                                 encoding=encoding)
    return multilabel_data(single.name, from_single(single.train), from_single(single.validation),
                           from_single(single.test), {k: from_single(v) for k, v in single.extra.items()},
                           single.card)


def set_aside_label(data: MultiLabelData, label: str) -> tuple[MultiLabelData, dict[str, int]]:
    """Rows labelled only `label` (out-of-scope, e.g. "oos") leave every split; validation and test
    ones become the extra sets oos_validation / oos_test. A row with `label` among other labels is
    refused: a query is out of scope or it is not."""
    parts, moved, extra = {}, {}, dict(data.extra)
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        mixed = [i for i, s in enumerate(split.label_sets) if label in s and len(s) > 1]
        if mixed:
            raise UserError(f"{name} row {mixed[0] + 1}: '{label}' (out-of-scope) together with other labels "
                            f"{split.label_sets[mixed[0]]}; an out-of-scope row has that one label")
        out = [i for i, s in enumerate(split.label_sets) if s == (label,)]
        gone = set(out)
        parts[name] = split.subset([i for i in range(len(split)) if i not in gone])
        if out:
            moved[name] = len(out)
            if name != "train":
                extra[f"oos_{name}"] = split.subset(out)
    if not moved:
        return data, {}
    return replace(data, labels=[lab for lab in data.labels if lab != label], extra=extra, **parts), moved


def multi_hot(label_sets, labels: list[str]) -> np.ndarray:
    """[rows, labels] float32 0/1 targets; a label outside `labels` is a UserError."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(label_sets), len(labels)), dtype=np.float32)
    for r, names in enumerate(label_sets):
        for name in names:
            if name not in index:
                raise UserError(f"label {name!r} is not one the model knows ({len(labels)} labels: "
                                f"{', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''})")
            out[r, index[name]] = 1.0
    return out
