"""Data catalog and loaders: dataset cards -> verified files -> examples, splits and label maps.

A dataset is named by a card in the repo's `datasets/` folder (shipped in the wheel as
`verticals_data`). Cards with `location: builtin` hold their own small files (our demo sets);
cards with `location: data_root` describe files the user keeps under the data root
(`--data-dir` > env `VERTICALS_DATA` > `~/.cache/verticals/datasets`). Every file is checked
against the card's sha256 before it is read. A classification card is read by the reader that
READERS lists for its `format.type`; core ships the generic `csv` reader, and a solution adds its
own formats (finance: `phrasebank`) when `import verticals` installs them. Bring-your-own data:
any CSV/JSONL path (or a directory of train/validation/test files) with configurable columns.
Leaves out: tokenisation and batching (core.classify.train); every domain format (the solutions' readers,
e.g. solutions.finance.data) and interaction data for recommendation (solutions.recsys.data).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from core.data.splits import ClassificationData, Split, classification_data, stratified_split
from core.foundation.errors import UserError
from core.foundation.labels import check_label_name

DATA_ENV = "VERTICALS_DATA"


# ---------------------------------------------------------------- catalog

def builtin_datasets_dir() -> Path:
    """The cards + demo data folder: `datasets/` of a checkout, or `verticals_data` when installed."""
    repo = Path(__file__).resolve().parents[2] / "datasets"
    if repo.is_dir():
        return repo
    spec = importlib.util.find_spec("verticals_data")
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    raise RuntimeError("verticals is installed without its datasets folder; reinstall the package")


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """`--data-dir` > env VERTICALS_DATA > ~/.cache/verticals/datasets."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path.home() / ".cache" / "verticals" / "datasets"


def list_cards() -> list[str]:
    return sorted(p.parent.name for p in builtin_datasets_dir().glob("*/card.yaml"))


def load_card(name: str) -> dict:
    path = builtin_datasets_dir() / name / "card.yaml"
    if not path.is_file():
        raise UserError(f"unknown dataset '{name}'. Known datasets: {', '.join(list_cards())}; "
                        f"or give a path to your own CSV/JSONL file or folder.")
    return yaml.safe_load(path.read_text())


def dataset_dir(card: dict, root: Path | None = None) -> Path:
    if card.get("location") == "builtin":
        return builtin_datasets_dir() / card["name"]
    return (root or data_root()) / card["name"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_file(card: dict, filename: str, root: Path | None = None) -> Path:
    """Path of one of the card's files after checking it exists and matches its sha256."""
    folder = dataset_dir(card, root)
    path = folder / filename
    how = (f"Get it from {card.get('url')} and put the files in {folder}/, or point --data-dir "
           f"(or env {DATA_ENV}) at the folder that contains '{card['name']}/'.")
    if not path.is_file():
        raise UserError(f"dataset '{card['name']}': file {filename} not found in {folder}. {how}")
    expected = {f["name"]: f.get("sha256") for f in card.get("files", [])}.get(filename)
    if expected and sha256_of(path) != expected:
        raise UserError(f"dataset '{card['name']}': {path} does not match its checksum "
                        f"(expected sha256 {expected}); the file is corrupt or a different "
                        f"version. Download it again. {how}")
    return path


def source_fingerprint(spec: str) -> str | None:
    """sha256 of your own data file, or of a folder's train/validation/test files (by name and
    content); None for a catalog name (its card pins the files) or a path that does not exist."""
    path = Path(spec).expanduser()
    if path.is_file():
        return sha256_of(path)
    if not path.is_dir():
        return None
    files = [f for f in (_find_split_file(path, s) for s in SPLIT_NAMES) if f is not None]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{sha256_of(f)}\n".encode())
    return digest.hexdigest() if files else None


# ---------------------------------------------------------------- file readers

def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A whole file decoded as `encoding`; a wrong encoding is a UserError naming the byte and the fix."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not valid {encoding}: byte 0x{raw[exc.start]:02x} at offset "
                        f"{exc.start}. Re-save it as UTF-8, or pass the file's encoding "
                        f"(e.g. encoding=latin-1).") from None


def read_records(path: Path, encoding: str = "utf-8") -> list[dict]:
    """Rows of a CSV (header required) or JSONL file as dicts; clear errors for empty/bad files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    text = read_text(path, encoding)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}, line {n}: not valid JSON ({exc.msg}). Fix or remove the line.") from None
    elif path.suffix.lower() in (".csv", ".tsv"):
        rows = list(csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise UserError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv or .jsonl")
    if not rows:
        raise UserError(f"{path} has no data rows (a CSV needs a header line and at least one row).")
    return rows


def records_to_split(rows: list[dict], path: Path, text_column: str, label_column: str | None) -> Split:
    columns = list(rows[0].keys())
    for col in [text_column] + ([label_column] if label_column else []):
        if col not in columns:
            key = "text_column" if col == text_column else "label_column"
            raise UserError(f"{path} has no column '{col}'. Its columns are: {', '.join(columns)}. "
                            f"Set {key}=<name> to pick one.")
    texts, labels = [], []
    for n, row in enumerate(rows, 2 if path.suffix.lower() != ".jsonl" else 1):
        text = str(row.get(text_column) or "").strip()
        if not text:
            raise UserError(f"{path}, row {n}: empty '{text_column}'. Fill it in or remove the row.")
        texts.append(text)
        if label_column:
            label = row.get(label_column)
            if label is None or str(label).strip() == "":
                raise UserError(f"{path}, row {n}: empty '{label_column}'. Label it or remove the row.")
            labels.append(check_label_name(str(label).strip(), f"{path}, row {n}"))
    return Split(texts, labels if label_column else [None] * len(texts))


# ---------------------------------------------------------------- classification loaders

SPLIT_NAMES = ("train", "validation", "test")

# A card reader: (card, config, data root) -> ClassificationData. `config` is the part of the
# spec after `:` (e.g. `allagree` in `financial_phrasebank:allagree`), "" when none was given.
Reader = Callable[[dict, str, Path], ClassificationData]


def write_labelled_csv(path: Path, rows) -> Path:
    """A bring-your-own split file: `text,label` header, then (text, label) `rows`; the reader of
    folders (train.csv / validation.csv / test.csv) reads it back with the default columns."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label"))
        writer.writerows(rows)
    return Path(path)


def load_classification(spec: str, *, root: str | os.PathLike | None = None,
                        text_column: str = "text", label_column: str = "label",
                        encoding: str = "utf-8") -> ClassificationData:
    """`spec`: a catalog name, optionally with a config (`banking77`, `demo_support`,
    `financial_phrasebank:allagree` once finance's reader is installed), read by the reader
    READERS lists for the card's format type; a CSV/JSONL file (split 80/10/10, stratified,
    seed 0); or a folder with train/validation/test files (validation carved from train when absent)."""
    name, _, config = spec.partition(":")
    if Path(spec).expanduser().exists():
        return _load_own(Path(spec).expanduser(), text_column, label_column, encoding)
    if name in list_cards():
        card = load_card(name)
        return card_reader(card)(card, config, data_root(root))
    if spec.endswith((".csv", ".jsonl", ".tsv")) or "/" in spec:
        raise UserError(f"data file or folder not found: {spec}")
    load_card(name)  # raises the unknown-dataset error with the list of names
    raise AssertionError("unreachable")


def card_reader(card: dict) -> Reader:
    """The reader READERS lists for a text-classification card's `format.type`."""
    where = f"datasets/{card['name']}/card.yaml"
    if card.get("task") != "text-classification":
        raise UserError(f"dataset '{card['name']}' is a {card.get('task')!r} dataset ({where}), not "
                        f"text classification; give a text-classification dataset or your own CSV/JSONL.")
    if (card.get("format") or {}).get("labels_column"):  # core.data.multilabel reads it
        raise UserError(f"dataset '{card['name']}' is multi-label (several labels per row: format.labels_column "
                        f"in {where}); train it with a multi-label recipe (task: multilabel-classification), "
                        f"or give single-label data.")
    kind = (card.get("format") or {}).get("type")
    if kind not in READERS:
        raise UserError(f"dataset '{card['name']}' ({where}) has format type {kind!r}, which no installed "
                        f"reader reads. Known format types: {', '.join(sorted(READERS))}. A solution's "
                        f"readers are installed by `import verticals`; or set format.type in the card "
                        f"to one of the known types.")
    return READERS[kind]


def load_card_csv(card: dict, config: str, root: Path) -> ClassificationData:
    """Format `csv`: one file per split (`splits:`), validation carved from train by
    `validation_from_train` when the card has none, and `extra:` evaluation sets."""
    if config:
        raise UserError(f"dataset '{card['name']}' has no configs; use data={card['name']} "
                        f"(without ':{config}').")
    fmt = card["format"]
    splits = {}
    for split_name, filename in card["splits"].items():
        path = verified_file(card, filename, root)
        splits[split_name] = records_to_split(read_records(path, fmt["encoding"]), path,
                                              fmt["text_column"], fmt["label_column"])
    if "validation" not in splits:
        rule = card["validation_from_train"]
        splits["train"], splits["validation"] = stratified_split(
            splits["train"], rule["fraction"], np.random.default_rng(rule["seed"]))
    extra = {}
    for extra_name, filename in (card.get("extra") or {}).items():
        path = verified_file(card, filename, root)
        extra[extra_name] = records_to_split(read_records(path, fmt["encoding"]), path,
                                             fmt["text_column"], fmt["label_column"])
    return classification_data(card["name"], splits["train"], splits["validation"], splits["test"], extra, card)


# Card format type -> reader. Core lists only its own formats; the app layer (`import verticals`)
# adds each solution's READERS to this dict.
READERS: dict[str, Reader] = {"csv": load_card_csv}


def _find_split_file(folder: Path, split_name: str) -> Path | None:
    for suffix in (".csv", ".jsonl", ".tsv"):
        if (folder / f"{split_name}{suffix}").is_file():
            return folder / f"{split_name}{suffix}"
    return None


def read_split_folder(path: Path, load, split, rng) -> tuple:
    """(train, validation, test) of a folder: each from its file where there is one, else cut from the
    training rows by `split(rows, 0.1, rng)` (test first, then validation)."""
    files = {s: _find_split_file(path, s) for s in SPLIT_NAMES}
    if files["train"] is None:
        raise UserError(f"folder {path} has no train.csv / train.jsonl; add one, or give a single file.")
    train = load(files["train"])
    test = load(files["test"]) if files["test"] else None
    if test is None:
        train, test = split(train, 0.1, rng)
    validation = load(files["validation"]) if files["validation"] else None
    if validation is None:
        train, validation = split(train, 0.1, rng)
    return train, validation, test


def _load_own(path: Path, text_column: str, label_column: str, encoding: str) -> ClassificationData:
    def load(p: Path) -> Split:
        return records_to_split(read_records(p, encoding), p, text_column, label_column)

    rng = np.random.default_rng(0)
    if path.is_dir():
        train, validation, test = read_split_folder(path, load, stratified_split, rng)
    else:
        every = load(path)
        rest, test = stratified_split(every, 0.1, rng)
        train, validation = stratified_split(rest, 0.1 / 0.9, rng)
    return classification_data(path.stem if path.is_file() else path.name, train, validation, test)
