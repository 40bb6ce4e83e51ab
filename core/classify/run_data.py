"""The data a classification run learns from and is evaluated on, as its recipe reads it.

`load_run_data(cfg.data)`: the loader (its split function and seed) with the out-of-scope rows set
aside; `evaluate_run` rebuilds a saved run's splits through here too. `prepare_data(cfg)`: that,
plus the training examples the run learns from (train_limit, train_fraction, shots and
label_names applied in that order, each seeded by train.seed).
Leaves out: reading files and cards (core.data.catalog).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.classify.config import DataConfig
from core.classify.fewshot import sample_per_class, with_label_name_examples
from core.data.catalog import load_classification
from core.data.splits import ClassificationData, Split, set_aside_out_of_scope, stratified_split


@dataclass(frozen=True)
class RunData:
    """What a run learns from and is evaluated on."""

    data: ClassificationData  # out-of-scope rows set aside
    set_aside: dict[str, int]  # split -> rows set aside as out-of-scope
    train: Split  # the examples the model learns from (after train_limit, shots, ...)
    scorer_bank: Split | None = None  # what embedding OOS scorers are fitted on; None = `train`


def limit_train(split: Split, n: int) -> Split:
    """The first `n` training examples in a fixed shuffled order (seed 0), so a quick run still
    sees most labels even when the file is sorted by label."""
    if not n or n >= len(split):
        return split
    order = np.random.default_rng(0).permutation(len(split))[:n]
    return Split([split.texts[i] for i in order], [split.labels[i] for i in order])


def load_run_data(data_cfg: DataConfig, data_dir: str | None = None) -> tuple[ClassificationData, dict[str, int]]:
    """(ClassificationData, rows set aside per split as out-of-scope)."""
    data = load_classification(data_cfg.source, root=data_dir, text_column=data_cfg.text_column,
                               label_column=data_cfg.label_column, encoding=data_cfg.encoding)
    return set_aside_out_of_scope(data, data_cfg.oos_label) if data_cfg.oos_label else (data, {})


def prepare_data(cfg, data_dir: str | None) -> RunData:
    """The run's data and the training examples it learns from: train_limit, train_fraction,
    shots and label_names applied in that order, each seeded by train.seed."""
    data, set_aside = load_run_data(cfg.data, data_dir)
    train = limit_train(data.train, cfg.data.train_limit)
    if cfg.data.train_fraction < 1.0:
        train = stratified_split(train, cfg.data.train_fraction, np.random.default_rng(cfg.train.seed))[1]
    if cfg.data.shots:
        train = sample_per_class(train, cfg.data.shots, np.random.default_rng(cfg.train.seed))
    if cfg.data.label_names:
        train = with_label_name_examples(train, data.labels)
    return RunData(data, set_aside, train)
