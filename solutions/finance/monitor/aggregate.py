"""Per entity and time window: count, mean score, negative share, EWMA of the mean score.

Windows are fixed, aligned to the Unix epoch (`window_start = floor(ts / size) * size`), so a
document's window never depends on what arrived before it. The EWMA runs over an entity's
non-empty windows in time order: `ewma_i = alpha * mean_i + (1 - alpha) * ewma_{i-1}`, starting
at the first window's mean. Sums are exact (`math.fsum`), so a window's numbers never depend on
the order its documents were read in.

`StreamClock` decides when a window is closed: the watermark is the latest document timestamp
stored so far, and every window that ends at or before `watermark - lateness` is closed (or every
window up to the watermark's own, on an explicit flush at the end of the input). A document whose
window was already closed when it arrived is late. Both are decided per document in stream order,
so they never depend on how the stream was cut into batches. Pure functions; the store feeds them
rows and writes the results.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from core.foundation.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float, allow_zero: bool = False) -> int:
    """'15m', '1h', '7d', '90s' or plain seconds -> seconds (0 only with `allow_zero`)."""
    smallest = 0 if allow_zero else 1
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text >= smallest:
        return int(text)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
    if not match or int(match.group(1)) < smallest:
        raise UserError(f"bad duration {text!r}: use a number with s, m, h or d (e.g. 15m, 1h, 7d)")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def window_start(ts: float, size: int) -> int:
    return int(ts // size) * size


@dataclass(frozen=True)
class WindowStats:
    entity: str
    start: int
    size: int
    count: int
    negative_count: int
    score_sum: float
    ewma: float

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.count if self.count else 0.0

    @property
    def negative_share(self) -> float:
        return self.negative_count / self.count if self.count else 0.0

    @property
    def end(self) -> int:
        return self.start + self.size


def window_stats(entity: str, start: int, size: int, scores: list[float], labels: list[str],
                 previous_ewma: float | None, alpha: float) -> WindowStats:
    """One window from its documents' scores and labels; `previous_ewma` is the entity's EWMA
    after its previous non-empty window (None for its first)."""
    count = len(scores)
    total = math.fsum(scores)  # exact: the same for any order of the same scores
    mean = total / count if count else 0.0
    ewma = mean if previous_ewma is None else alpha * mean + (1 - alpha) * previous_ewma
    return WindowStats(entity, start, size, count, sum(1 for lab in labels if lab == "negative"), total, ewma)


@dataclass(frozen=True)
class StreamClock:
    """The stream's watermark and the time up to which every window is closed (see the module doc)."""

    watermark: float = -math.inf  # latest document timestamp stored
    closed_until: float = -math.inf  # every window ending at or before this is closed

    def is_closed(self, start: int, size: int) -> bool:
        return start + size <= self.closed_until

    def admit(self, ts: float, size: int, lateness: int) -> tuple[bool, "StreamClock"]:
        """(on time?, the clock after this document): a document is late when its window is closed."""
        on_time = not self.is_closed(window_start(ts, size), size)
        watermark = max(self.watermark, ts)
        return on_time, StreamClock(watermark, max(self.closed_until, watermark - lateness))

    def flushed(self, size: int) -> "StreamClock":
        """End of input: close every window up to and including the watermark's."""
        if self.watermark == -math.inf:
            return self
        return StreamClock(self.watermark, max(self.closed_until, window_start(self.watermark, size) + size))
