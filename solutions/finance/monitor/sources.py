"""Where documents come from: a JSONL file, a directory of JSONL files, or stdin.

A source yields `Line`s: the raw text of one complete line and the byte offset just after it, so
the store can commit "everything up to here is done" in the same transaction as the documents.
A file is read from its committed offset; only complete lines (ending in a newline) are taken,
except the last line of a file that is not followed (a file without a final newline). A file
that shrank below its committed offset was truncated or replaced, so it is read again from the
start (document ids keep that from counting anything twice). `parse_document` turns a line into a
`Document` or raises `Malformed` with the reason that goes to the quarantine.
Leaves out: network sources (Kafka, HTTP); put them behind the same `batches()` shape.
"""

from __future__ import annotations

import json
import select
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from core.errors import UserError


@dataclass(frozen=True)
class Document:
    id: str
    ts: float  # Unix seconds, UTC
    ts_text: str
    text: str
    source: str | None = None
    tickers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Line:
    source_key: str
    start: int  # byte offset of the line's first byte
    end: int  # byte offset just after its newline: the offset to commit
    raw: str


class Malformed(ValueError):
    """A line that cannot become a Document; the message is the quarantine reason."""


def parse_timestamp(value) -> float:
    """ISO 8601 (`Z` or an offset; no zone means UTC) -> Unix seconds; Malformed otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"bad timestamp: {value!r} is not an ISO 8601 string")
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"bad timestamp: {value!r} is not ISO 8601 (e.g. 2026-03-02T09:15:00Z)") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def parse_document(raw: str) -> Document:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Malformed(f"bad JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    for key in ("id", "ts", "text"):
        if key not in obj or obj[key] is None:
            raise Malformed(f"missing field '{key}'")
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool) or not str(obj["id"]).strip():
        raise Malformed("bad id: must be a non-empty string or an integer")
    if not isinstance(obj["text"], str) or not obj["text"].strip():
        raise Malformed("empty text")
    tickers = obj.get("tickers") or []
    if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
        raise Malformed("bad tickers: must be a list of strings")
    source = obj.get("source")
    return Document(id=str(obj["id"]).strip(), ts=parse_timestamp(obj["ts"]), ts_text=str(obj["ts"]),
                    text=obj["text"].strip(), source=str(source) if source is not None else None,
                    tickers=tuple(t.strip().lstrip("$").upper() for t in tickers if t.strip()))


def read_lines(path: Path, offset: int, max_lines: int, *, final: bool) -> list[Line]:
    """Up to `max_lines` complete lines of `path` from byte `offset`. `final`: also take a last
    line with no newline (the file is complete); otherwise it is left for the next read."""
    key = f"file:{path.resolve()}"
    size = path.stat().st_size
    if size < offset:  # truncated or replaced: start again (ids deduplicate)
        offset = 0
    lines = []
    with open(path, "rb") as handle:
        handle.seek(offset)
        pos = offset
        while len(lines) < max_lines:
            data = handle.readline()
            if not data:
                break
            if not data.endswith(b"\n") and not final:
                break
            lines.append(Line(key, pos, pos + len(data), data.decode("utf-8", errors="replace").rstrip("\r\n")))
            pos += len(data)
    return lines


class FileSource:
    """One JSONL file, resumed at its committed offset."""

    def __init__(self, path: Path, follow: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"input file not found: {self.path}. Give a JSONL file, a directory of "
                            f"*.jsonl files, or '-' for stdin.")
        self.follow = follow

    def files(self) -> list[Path]:
        return [self.path]

    def batches(self, offsets, batch_size: int) -> Iterator[list[Line]]:
        """Batches of new lines across this source's files; `offsets(key) -> int` gives the
        committed offset, asked again before every batch (the caller commits in between)."""
        for path in self.files():
            key = f"file:{path.resolve()}"
            while True:
                batch = read_lines(path, offsets(key), batch_size, final=not self.follow)
                if not batch:
                    break
                yield batch


class DirectorySource(FileSource):
    """Every *.jsonl file in a directory, in name order; files that appear later are picked up."""

    def __init__(self, path: Path, follow: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"input directory not found: {self.path}")
        self.follow = follow

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.jsonl") if p.is_file())


class StdinSource:
    """Lines from stdin. Not seekable, so there is nothing to resume: the offset is the byte count
    since this process started, and ids keep a re-fed stream from counting twice."""

    key = "stdin"

    def __init__(self, stream=None, flush_seconds: float = 0.5):
        self.stream = stream or sys.stdin
        self.flush_seconds = flush_seconds
        self.position = 0
        self.closed = False

    def batches(self, offsets, batch_size: int) -> Iterator[list[Line]]:
        """A batch when `batch_size` lines arrived or input paused for `flush_seconds`."""
        while not self.closed:
            batch = []
            while len(batch) < batch_size:
                if batch and not _readable(self.stream, self.flush_seconds):
                    break
                data = self.stream.readline()
                if not data:
                    self.closed = True
                    break
                size = len(data.encode("utf-8"))
                batch.append(Line(self.key, self.position, self.position + size, data.rstrip("\r\n")))
                self.position += size
            if batch:
                yield batch


def _readable(stream, timeout: float) -> bool:
    try:
        return bool(select.select([stream], [], [], timeout)[0])
    except (ValueError, OSError, TypeError):  # not a real file (e.g. io.StringIO in tests)
        return True


def open_source(spec: str, follow: bool = False):
    if spec == "-":
        return StdinSource()
    path = Path(spec).expanduser()
    if path.is_dir():
        return DirectorySource(path, follow)
    return FileSource(path, follow)
