"""Where the queries to choose labels for come from: the service's prediction log or a file of queries.

`read_candidates(path)` -> `Candidates`: distinct unlabelled queries, each with how often it occurs.
- A prediction log (the SQLite file `verticals serve --log` writes, recognised by its tables, opened
  read-only first so a wrong path never becomes a database; or the postgresql:// URL its replicas
  share, which must hold the log's tables): its `unlabelled()` rows
  (core.mlops.feedback.PredictionLog: no feedback on the request nor on the same text elsewhere),
  one per text hash, the most recent request kept (its id, model version, logged intent and
  confidence). Texts are None where the log keeps only hashes (served without --log-text).
- A file: .txt (one query per line, blank lines skipped), .csv / .tsv / .jsonl with a text column
  (`text_column`, default "text"). Identical texts count once.
`labelled_texts(paths)`: texts already labelled, from prediction logs (their feedback) or labelled
files (e.g. the run's training CSV): they are skipped and, for coreset, already covered.
Anything else (a missing file, another database, an unknown suffix, no queries) is a UserError.
Leaves out: scoring and choosing (solutions.support.labelling, core.mlops.selection).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from core.data.catalog import read_records, read_text, records_to_split
from core.foundation.errors import UserError
from core.foundation.text import check_text
from core.mlops.feedback import text_sha256
from core.mlops.prediction_logs import PredictionStore, is_database_url, open_prediction_log, reader_options, shown

QUERY_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".ndjson")
EXPECTED = ("a prediction log (the SQLite file or postgresql:// URL `verticals serve --log` writes) or a file of queries "
            f"({', '.join(QUERY_SUFFIXES)})")
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Candidates:
    """Distinct unlabelled queries, aligned lists. `texts[i]` is None where the log keeps only the
    hash; `request_ids`, `versions`, `logged` ((intent, confidence) the served model logged) are
    None for queries from a file; `counts[i]`: the rows holding the text."""

    source: str
    texts: list[str | None] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    request_ids: list[str | None] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    logged: list[tuple[str, float] | None] = field(default_factory=list)
    skipped_labelled: int = 0  # rows (log predictions, file lines) whose text is labelled
    rows: int = 0  # rows read: every logged prediction, every query line
    from_log: bool = False

    def __len__(self) -> int:
        return len(self.hashes)

    def add(self, text: str | None, sha: str, request_id=None, version=None, logged=None) -> None:
        self.texts.append(text)
        self.hashes.append(sha)
        self.counts.append(1)
        self.request_ids.append(request_id)
        self.versions.append(version)
        self.logged.append(logged)

    def without(self, hashes: set[str]) -> Candidates:
        """These candidates less the texts whose hash is in `hashes` (labelled elsewhere)."""
        keep = [i for i, h in enumerate(self.hashes) if h not in hashes]
        dropped = sum(c for h, c in zip(self.hashes, self.counts) if h in hashes)
        out = Candidates(self.source, skipped_labelled=self.skipped_labelled + dropped, rows=self.rows,
                         from_log=self.from_log)
        for name in ("texts", "hashes", "counts", "request_ids", "versions", "logged"):
            setattr(out, name, [getattr(self, name)[i] for i in keep])
        return out


def is_prediction_log(path) -> bool:
    """True for a PostgreSQL URL or an SQLite file with the prediction log's tables; False for a
    non-SQLite file; UserError for another (or unreadable) database."""
    if is_database_url(path):
        return True
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is an unreadable SQLite database ({exc}); give {EXPECTED}") from None
    if not {"predictions", "feedback"} <= tables:
        raise UserError(f"{path} is an SQLite database but not a prediction log (its tables: "
                        f"{', '.join(sorted(tables)) or 'none'}); give {EXPECTED}")
    return True


def _open_log(path) -> PredictionStore:
    # no retention while reading: opening with the service's limits would prune rows
    return open_prediction_log(path, must_exist=True, **reader_options())


def _existing(path):
    if is_database_url(path):
        return path
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} not found; give {EXPECTED}")
    return path


def _from_log(path) -> Candidates:
    with _open_log(path) as log:
        total = log.counts()["predictions"]
        rows = log.unlabelled()
    found = Candidates(str(path), skipped_labelled=total - len(rows), rows=total, from_log=True)
    where: dict[str, int] = {}
    for row in reversed(rows):  # newest first: a text's most recent request is the one to label
        sha = row["text_sha256"]
        if sha in where:
            found.counts[where[sha]] += 1
            continue
        where[sha] = len(found)
        found.add(row["text"], sha, row["request_id"], row["model_version"], (row["label"], row["confidence"]))
    if not total:
        raise UserError(f"{shown(path)} holds no predictions yet: route some traffic through `verticals serve --log` "
                        f"first")
    if not len(found):
        raise UserError(f"every one of the {total} predictions in {shown(path)} is labelled already: nothing to "
                        f"choose from")
    return found


def _file_texts(path: Path, text_column: str) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = [line.strip() for line in read_text(path).splitlines()]
        return [check_text(t, f"{path} line {n}") for n, t in enumerate(lines, 1) if t]
    rows = read_records(path)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(f"{path} row {n} is not an object; give one {{\"{text_column}\": ...}} per line")
    texts = records_to_split(rows, path, text_column, None).texts
    return [check_text(t, f"{path} row {n}") for n, t in enumerate(texts, 1)]


def _from_file(path: Path, text_column: str) -> Candidates:
    texts = _file_texts(path, text_column)
    if not texts:
        raise UserError(f"{path} holds no queries")
    found, where = Candidates(str(path), rows=len(texts)), {}
    for text in texts:
        sha = text_sha256(text)
        if sha in where:
            found.counts[where[sha]] += 1
        else:
            where[sha] = len(found)
            found.add(text, sha)
    return found


def read_candidates(path, text_column: str = "text") -> Candidates:
    """The distinct unlabelled queries in a prediction log or a file of queries (module docstring)."""
    path = _existing(path)
    if is_prediction_log(path):
        return _from_log(path)
    if path.suffix.lower() not in QUERY_SUFFIXES:
        raise UserError(f"{path} is neither a prediction log nor a file of queries (suffix "
                        f"'{path.suffix or 'none'}'); give {EXPECTED}")
    return _from_file(path, text_column)


def labelled_texts(paths, text_column: str = "text") -> list[str]:
    """Texts already labelled in `paths`: prediction logs (their feedback) or files with a text column."""
    texts: list[str] = []
    for path in map(_existing, paths):
        if is_prediction_log(path):
            with _open_log(path) as log:
                texts += [example.text for example in log.labelled()]
        elif path.suffix.lower() in QUERY_SUFFIXES:
            texts += _file_texts(path, text_column)
        else:
            raise UserError(f"--labelled {path}: give {EXPECTED}")
    return texts
