"""A line of input as every source hands it to the loop, and the bounds on it.

`Line`: the raw text of one complete line (or message) with the byte offsets around it, so the
store can commit "everything up to here is done" in the same transaction as the documents; a
line that cannot be handed over as text carries a `problem` (its quarantine reason) instead.
`MAX_LINE_BYTES` bounds a line (a longer one is quarantined without being held in memory), of
which `QUARANTINE_HEAD_BYTES` are kept; `printable` makes any text storable.
Leaves out: reading lines (sources, redis_source) and parsing them into documents (sources).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE_BYTES = 1_000_000  # a longer line is quarantined without being held in memory
QUARANTINE_HEAD_BYTES = 4000  # how much of an over-long line is kept for the quarantine record


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with anything UTF-8 cannot encode (lone surrogates) written
    as a backslash escape: always storable, for quarantine records and error messages."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Line:
    source_key: str
    start: int  # byte offset of the line's first byte
    end: int  # byte offset just after its newline: the offset to commit
    raw: str  # the line's text (for a line with a problem: a printable head of it)
    problem: str | None = None  # why the line cannot be read as text; it goes to the quarantine
