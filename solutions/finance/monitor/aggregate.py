"""Per entity and time window: count, mean score, negative share, EWMA of the mean score.

Windows are fixed, aligned to the Unix epoch (`window_start = floor(ts / size) * size`), so a
document's window never depends on what arrived before it. The EWMA runs over an entity's
non-empty windows in time order: `ewma_i = alpha * mean_i + (1 - alpha) * ewma_{i-1}`, starting
at the first window's mean. Pure functions; the store feeds them rows and writes the results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> int:
    """'15m', '1h', '7d', '90s' or plain seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return int(text)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text))
    if not match or int(match.group(1)) <= 0:
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
    mean = sum(scores) / count if count else 0.0
    ewma = mean if previous_ewma is None else alpha * mean + (1 - alpha) * previous_ewma
    return WindowStats(entity, start, size, count, sum(1 for lab in labels if lab == "negative"),
                       float(sum(scores)), ewma)
