"""Where documents come from: a JSONL file, a directory of JSONL files, or stdin.

A source yields `Line`s (lines.py): the raw text of one complete line and the byte offset just after it, so
the store can commit "everything up to here is done" in the same transaction as the documents.
A file is read from its committed offset; only complete lines (ending in a newline) are taken,
except the last line of a file that is not followed (a file without a final newline). A file
that shrank below its committed offset was truncated or replaced, so it is read again from the
start (document ids keep that from counting anything twice). `parse_document` turns a line into a
`Document` or raises `Malformed` with the reason that goes to the quarantine.

A line the source cannot hand over as text comes with a `problem` (the quarantine reason) instead
of being dropped or crashing the reader: a line over `max_line_bytes` (read in chunks and skipped,
only its head kept) or bytes that are not UTF-8. `parse_document` validates everything it keeps:
JSON that Python refuses (an integer of thousands of digits, nesting deep enough to recurse), and
strings that cannot be encoded as UTF-8 (a JSON escape of a lone surrogate, "\ud800") or are over
their size bound are Malformed too, so that whatever reaches the store is storable, and so is a
timestamp more than a day ahead of the machine's clock (it would close every window at once). One
rule for every field of every entry point (file, stdin, Redis): a NUL character is refused with the
reason (SQLite's length()/substr() stop at it and PostgreSQL text cannot hold it). A producer's own
`tickers` must have a ticker's shape (1-6 letters, an optional .class: what a cashtag matches) or be
in the watchlist; any other one (markup, a sentence) quarantines the document, or, with
`bad_tickers="ignore"`, is dropped with a warning (`check_tickers`).
A source has `batches(offsets, batch_size)` and `acknowledge(lines)`, which the loop calls after
the batch's transaction committed; `redis://` inputs are Redis Streams read through a consumer
group (redis_source.py). Leaves out: other network sources (Kafka, HTTP); same two methods.
"""

from __future__ import annotations

import json
import logging
import math
import re
import select
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from core.foundation.errors import UserError
from core.foundation.text import has_visible_text
from solutions.finance.monitor.lines import MAX_LINE_BYTES, QUARANTINE_HEAD_BYTES, Line, printable
from solutions.finance.monitor.redis_source import RedisStreamSource

log = logging.getLogger("verticals.finance")
MAX_ID_CHARS = 512
MAX_SOURCE_CHARS = 512
MAX_TICKERS = 100
MAX_TICKER_CHARS = 32
TICKER_SHAPE = re.compile(r"[A-Z]{1,6}(?:\.[A-Z]{1,2})?")  # a cashtag's shape: AAPL, BRK.B (entities.CASHTAG)
BAD_TICKERS = ("quarantine", "ignore")  # what a document's ticker that is neither shape nor watchlist gets
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Document:
    id: str
    ts: float  # Unix seconds, UTC
    ts_text: str
    text: str
    source: str | None = None
    tickers: tuple[str, ...] = ()


class Malformed(ValueError):
    """A line that cannot become a Document; the message is the quarantine reason."""


def parse_timestamp(value) -> float:
    """ISO 8601 (`Z` or an offset; no zone means UTC) -> Unix seconds; Malformed otherwise."""
    if not isinstance(value, str) or not value.strip():
        shown = repr(value) if isinstance(value, (str, int, float)) else f"a JSON {type(value).__name__}"
        raise Malformed(f"bad timestamp: {printable(shown, 80)} is not an ISO 8601 string")
    _check_string("timestamp", value, 64)
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError, OSError):  # not ISO 8601, or out of datetime's range
        raise Malformed(f"bad timestamp: {value!r} is not ISO 8601 (e.g. 2026-03-02T09:15:00Z)") from None


def _check_string(field: str, value: str, limit: int) -> str:
    """`value` if it is UTF-8 encodable and at most `limit` characters; Malformed('bad <field>') otherwise."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Malformed(f"bad {field}: {value[exc.start]!r} at character {exc.start} is a lone surrogate, "
                        f"not valid Unicode") from None
    if "\x00" in value:  # one rule for every field: SQLite's length()/substr() stop at a NUL
        raise Malformed(f"bad {field}: holds a NUL character (\\u0000) at {value.index(chr(0))}; remove it")
    if len(value) > limit:
        raise Malformed(f"bad {field}: over {limit} characters")
    return value


def _load_json(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Malformed(f"bad JSON: {exc.msg}") from None
    except RecursionError:
        raise Malformed("bad JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's int-string conversion limit
        raise Malformed(f"bad JSON: {printable(str(exc), 200)}") from None


def check_tickers(tickers: list[str], known: frozenset[str], policy: str) -> list[str]:
    """The document's own tickers that have a ticker's shape (TICKER_SHAPE) or are in the watchlist (`known`);
    any other one quarantines the document (policy "quarantine") or is dropped (policy "ignore")."""
    if policy not in BAD_TICKERS:
        raise UserError(f"bad_tickers={policy!r}: choose one of {', '.join(BAD_TICKERS)}")
    bad = [t for t in tickers if t not in known and not TICKER_SHAPE.fullmatch(t)]
    if bad and policy == "ignore":
        log.warning("ignored ticker(s) %s: neither a ticker's shape nor in the watchlist", printable(repr(bad), 200))
    if bad and policy == "quarantine":
        raise Malformed(f"bad tickers: {printable(repr(bad[0]), 80)} is neither a ticker (1-6 letters, an optional "
                        f".class, e.g. BRK.B) nor in the watchlist")
    return [t for t in tickers if t not in bad]


def parse_document(raw: str, not_after: float = math.inf, known_tickers: frozenset[str] = frozenset(),
                   bad_tickers: str = "quarantine") -> Document:
    """The Document in a line, or Malformed. `not_after`: a later timestamp is rejected (the loop
    passes the clock plus a day: one document dated 2099 would otherwise close every window).
    `known_tickers` (the watchlist's) and `bad_tickers`: see `check_tickers`."""
    obj = _load_json(raw)
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    for key in ("id", "ts", "text"):
        if key not in obj or obj[key] is None:
            raise Malformed(f"missing field '{key}'")
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool) or not str(obj["id"]).strip():
        raise Malformed("bad id: must be a non-empty string or an integer")
    doc_id = _check_string("id", str(obj["id"]).strip(), MAX_ID_CHARS)
    if not isinstance(obj["text"], str) or not has_visible_text(obj["text"]):
        raise Malformed("empty text" if not isinstance(obj["text"], str) or not obj["text"].strip()
                        else "empty text: no visible characters (only zero-width, format or control characters)")
    text = _check_string("text", obj["text"].strip(), MAX_LINE_BYTES)
    tickers = obj.get("tickers") or []
    if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
        raise Malformed("bad tickers: must be a list of strings")
    if len(tickers) > MAX_TICKERS:
        raise Malformed(f"bad tickers: more than {MAX_TICKERS}")
    tickers = [_check_string("tickers", t.strip().lstrip("$").upper(), MAX_TICKER_CHARS) for t in tickers]
    tickers = check_tickers([t for t in tickers if t], known_tickers, bad_tickers)
    source = obj.get("source")
    if source is not None and isinstance(source, (bool, dict, list)):
        raise Malformed("bad source: must be a string")
    ts = parse_timestamp(obj["ts"])
    if ts > not_after:
        raise Malformed(f"bad timestamp: {obj['ts']!r} is in the future")
    return Document(id=doc_id, ts=ts, ts_text=obj["ts"], text=text,
                    source=None if source is None else _check_string("source", str(source), MAX_SOURCE_CHARS),
                    tickers=tuple(t for t in tickers if t))


def _next_line(readline, limit: int) -> tuple[bytes, int, bool]:
    """(head, length, complete) of the next line from `readline(n) -> bytes`: its first bytes, its
    length in bytes and whether it ends in a newline. A line over `limit` bytes is read on in chunks
    to its end, keeping only the head, so memory stays bounded whatever the line's size."""
    head = readline(limit + 1)
    length, complete = len(head), head.endswith(b"\n")
    while not complete and length > limit:
        chunk = readline(_CHUNK)
        if not chunk:
            break
        length += len(chunk)
        complete = chunk.endswith(b"\n")
    return head, length, complete


def decode_line(key: str, start: int, head: bytes, length: int, complete: bool, limit: int) -> Line:
    """A `Line` from the bytes `_next_line` read; one that is too long or not UTF-8 gets a `problem`."""
    end = start + length
    if length - complete > limit:
        return Line(key, start, end, head[:QUARANTINE_HEAD_BYTES].decode("utf-8", "backslashreplace"),
                    f"line over {limit} bytes ({length} bytes)")
    data = head.rstrip(b"\r\n")
    try:
        return Line(key, start, end, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Line(key, start, end, data.decode("utf-8", "backslashreplace"),
                    f"bad encoding: byte 0x{data[exc.start]:02x} at {exc.start} is not UTF-8")


def source_key(path: Path) -> str:
    return printable(f"file:{path.resolve()}", 4096)  # a file name need not be valid UTF-8


def read_lines(path: Path, offset: int, max_lines: int, *, final: bool,
               max_line_bytes: int = MAX_LINE_BYTES) -> list[Line]:
    """Up to `max_lines` complete lines of `path` from byte `offset`. `final`: also take a last
    line with no newline (the file is complete); otherwise it is left for the next read."""
    key = source_key(path)
    try:
        size = path.stat().st_size
        handle = open(path, "rb")
    except FileNotFoundError:  # removed or rotated away since it was listed: nothing to read
        return []
    if size < offset:  # truncated or replaced: start again (ids deduplicate)
        offset = 0
    lines = []
    with handle:
        handle.seek(offset)
        pos = offset
        while len(lines) < max_lines:
            head, length, complete = _next_line(handle.readline, max_line_bytes)
            if not length or (not complete and not final):
                break
            lines.append(decode_line(key, pos, head, length, complete, max_line_bytes))
            pos += length
    return lines


class FileSource:
    """One JSONL file, resumed at its committed offset."""

    def __init__(self, path: Path, follow: bool = False, max_line_bytes: int = MAX_LINE_BYTES):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"input file not found: {self.path}. Give a JSONL file, a directory of "
                            f"*.jsonl files, or '-' for stdin.")
        self.follow, self.max_line_bytes = follow, max_line_bytes

    def files(self) -> list[Path]:
        return [self.path]

    def acknowledge(self, lines: list[Line]) -> None:
        """Nothing to do: the offset after `lines` was committed with them (a broker source acks here)."""

    def batches(self, offsets, batch_size: int) -> Iterator[list[Line]]:
        """Batches of new lines across this source's files; `offsets(key) -> int` gives the
        committed offset, asked again before every batch (the caller commits in between)."""
        for path in self.files():
            key = source_key(path)
            while True:
                batch = read_lines(path, offsets(key), batch_size, final=not self.follow,
                                   max_line_bytes=self.max_line_bytes)
                if not batch:
                    break
                yield batch


class DirectorySource(FileSource):
    """Every *.jsonl file in a directory, in name order; files that appear later are picked up."""

    def __init__(self, path: Path, follow: bool = False, max_line_bytes: int = MAX_LINE_BYTES):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"input directory not found: {self.path}")
        self.follow, self.max_line_bytes = follow, max_line_bytes

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.jsonl") if p.is_file())


class StdinSource:
    """Lines from stdin. Not seekable, so there is nothing to resume: the offset is the byte count
    since this process started, and ids keep a re-fed stream from counting twice."""

    key = "stdin"

    def __init__(self, stream=None, flush_seconds: float = 0.5, max_line_bytes: int = MAX_LINE_BYTES):
        self.stream = stream or sys.stdin
        self.flush_seconds, self.max_line_bytes = flush_seconds, max_line_bytes
        self.position = 0
        self.closed = False

    def _readline(self, size: int) -> bytes:
        """Bytes, whatever the stream: the raw buffer of a real stdin (so its bytes are checked as
        UTF-8 here, not by the text layer), or text re-encoded with lone surrogates kept as bytes
        (a text stream in tests, or one decoded with surrogateescape) so they are quarantined."""
        binary = getattr(self.stream, "buffer", None)
        if binary is not None:
            return binary.readline(size)
        return self.stream.readline(size).encode("utf-8", "surrogatepass")

    def batches(self, offsets, batch_size: int) -> Iterator[list[Line]]:
        """A batch when `batch_size` lines arrived or input paused for `flush_seconds`."""
        while not self.closed:
            batch = []
            while len(batch) < batch_size:
                if batch and not _readable(self.stream, self.flush_seconds):
                    break
                head, length, complete = _next_line(self._readline, self.max_line_bytes)
                if not length:
                    self.closed = True
                    break
                batch.append(decode_line(self.key, self.position, head, length, complete, self.max_line_bytes))
                self.position += length
            if batch:
                yield batch

    def acknowledge(self, lines: list[Line]) -> None:
        """Nothing to do: stdin cannot be read again."""


def _readable(stream, timeout: float) -> bool:
    try:
        return bool(select.select([stream], [], [], timeout)[0])
    except (ValueError, OSError, TypeError):  # not a real file (e.g. io.StringIO in tests)
        return True


def open_source(spec: str, follow: bool = False, max_line_bytes: int = MAX_LINE_BYTES):
    if str(spec).startswith("redis://"):  # a stream read through a consumer group (redis_source.py)
        return RedisStreamSource(spec, follow, max_line_bytes)
    if spec == "-":
        return StdinSource(max_line_bytes=max_line_bytes)
    path = Path(spec).expanduser()
    if path.is_dir():
        return DirectorySource(path, follow, max_line_bytes)
    return FileSource(path, follow, max_line_bytes)
