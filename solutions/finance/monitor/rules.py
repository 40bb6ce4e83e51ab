"""Alert rules: one small class per rule, each a pure function of a window and its baseline.

The baseline of a window is the same entity's windows in the trailing `baseline` period before
it (e.g. the 7 days before this hour). Defaults (override any of them in a rules YAML):

    window: 1h            # aggregation window
    baseline: 7d          # trailing period the rules compare against
    lateness: 5m          # a window is closed (and evaluated) once a document this much past its end arrives
    ewma_alpha: 0.3
    negative_share_spike: {z: 3.0, min_count: 5, prior_share: 0.2, prior_weight: 10}
    sentiment_drop:       {drop: 0.5, min_count: 5, prior_weight: 10}
    volume_spike:         {ratio: 4.0, min_count: 5, min_rate: 0.5}
    # a rule is switched off with `enabled: false`

Negative-share spike: a binomial z-score of the window's negative share against the baseline's
pooled share, smoothed towards `prior_share` with `prior_weight` pseudo-documents so that a
quiet entity (few or no baseline documents) has a sane baseline instead of 0 or a division by 0:
    p0 = (neg_b + prior_share * w) / (n_b + w);  z = (p - p0) / sqrt(p0 (1 - p0) / n)
Sentiment drop: the window's mean score is at least `drop` below the baseline's pooled mean
(shrunk towards 0 with `prior_weight` pseudo-documents). Volume spike: the window's count is at
least `ratio` times the baseline's mean count per window (empty windows count as 0), floored at
`min_rate`. Every rule needs `min_count` documents in the window.

Rules see a window once, when it is closed (aggregate.StreamClock), with all of its on-time
documents, so an alert's value and evidence are those of the whole window, never of however much
of it had been read when a batch ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.settings import read_yaml_mapping
from solutions.finance.monitor.aggregate import WindowStats, parse_duration


@dataclass(frozen=True)
class Baseline:
    count: int  # documents in the trailing period
    negative_count: int
    score_sum: float
    windows: int  # how many windows the trailing period spans (empty ones included)

    @classmethod
    def of(cls, history: list[WindowStats], windows: int) -> "Baseline":
        return cls(sum(w.count for w in history), sum(w.negative_count for w in history),
                   sum(w.score_sum for w in history), windows)


@dataclass(frozen=True)
class Finding:
    rule: str
    value: float
    baseline: float
    detail: str
    evidence: str  # which documents are evidence: negative | lowest | all


@dataclass(frozen=True)
class NegativeShareSpike:
    name = "negative_share_spike"
    z: float = 3.0
    min_count: int = 5
    prior_share: float = 0.2
    prior_weight: float = 10.0

    def evaluate(self, window: WindowStats, base: Baseline) -> Finding | None:
        if window.count < self.min_count:
            return None
        p0 = (base.negative_count + self.prior_share * self.prior_weight) / (base.count + self.prior_weight)
        z = (window.negative_share - p0) / math.sqrt(p0 * (1 - p0) / window.count)
        if z < self.z:
            return None
        return Finding(self.name, window.negative_share, p0,
                       f"negative share {window.negative_share:.2f} vs baseline {p0:.2f} "
                       f"(z={z:.1f}, n={window.count})", "negative")


@dataclass(frozen=True)
class SentimentDrop:
    name = "sentiment_drop"
    drop: float = 0.5
    min_count: int = 5
    prior_weight: float = 10.0

    def evaluate(self, window: WindowStats, base: Baseline) -> Finding | None:
        if window.count < self.min_count:
            return None
        mean0 = base.score_sum / (base.count + self.prior_weight)
        if window.mean_score > mean0 - self.drop:
            return None
        return Finding(self.name, window.mean_score, mean0,
                       f"mean score {window.mean_score:+.2f} vs baseline {mean0:+.2f} (n={window.count})", "lowest")


@dataclass(frozen=True)
class VolumeSpike:
    name = "volume_spike"
    ratio: float = 4.0
    min_count: int = 5
    min_rate: float = 0.5

    def evaluate(self, window: WindowStats, base: Baseline) -> Finding | None:
        rate = base.count / base.windows if base.windows else 0.0
        if window.count < self.min_count or window.count < self.ratio * max(rate, self.min_rate):
            return None
        return Finding(self.name, float(window.count), rate,
                       f"{window.count} documents vs {rate:.2f} per window in the baseline", "all")


RULES = {"negative_share_spike": NegativeShareSpike, "sentiment_drop": SentimentDrop, "volume_spike": VolumeSpike}


@dataclass(frozen=True)
class RuleSet:
    window: int = 3600
    baseline: int = 7 * 86400
    ewma_alpha: float = 0.3
    lateness: int = 300
    rules: tuple = (NegativeShareSpike(), SentimentDrop(), VolumeSpike())

    @property
    def baseline_windows(self) -> int:
        return max(1, self.baseline // self.window)

    def evaluate(self, window: WindowStats, history: list[WindowStats]) -> list[Finding]:
        """`history`: the entity's windows that start in [window.start - baseline, window.start)."""
        base = Baseline.of(history, self.baseline_windows)
        return [f for f in (rule.evaluate(window, base) for rule in self.rules) if f is not None]


def _build_rule(name: str, values) -> object | None:
    cls = RULES[name]
    values = dict(values or {})
    if not values.pop("enabled", True):
        return None
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UserError(f"rule '{name}': unknown key '{unknown[0]}'; valid keys: enabled, {', '.join(valid)}")
    try:
        rule = cls(**{k: type(getattr(cls, k))(v) for k, v in values.items()})
    except (TypeError, ValueError):
        raise UserError(f"rule '{name}': every value must be a number; got {values}") from None
    if any(getattr(rule, f.name) < 0 for f in fields(cls)):
        raise UserError(f"rule '{name}': values must be 0 or more; got {values}")
    return rule


def load_rules(path: Path | None = None, window: str | None = None) -> RuleSet:
    """Defaults, overridden by a rules YAML, then by `window` (the CLI's --window)."""
    raw = {} if path is None else read_yaml_mapping(path, "rules file", "of rule names and window settings "
                                                     "(see solutions/finance/monitor/rules.py)")
    settings = ("window", "baseline", "lateness", "ewma_alpha")
    unknown = sorted(set(raw) - {*settings, *RULES})
    if unknown:
        raise UserError(f"rules file: unknown key '{unknown[0]}'; valid keys: {', '.join(settings)}, "
                        f"{', '.join(RULES)}")
    size = parse_duration(window or raw.get("window", "1h"))
    baseline = parse_duration(raw.get("baseline", "7d"))
    lateness = parse_duration(raw.get("lateness", "5m"), allow_zero=True)
    alpha = float(raw.get("ewma_alpha", 0.3))
    if not 0 < alpha <= 1:
        raise UserError(f"ewma_alpha must be in (0, 1]; got {alpha}")
    if baseline < size:
        raise UserError(f"baseline ({baseline} s) must be at least one window ({size} s)")
    rules = tuple(r for r in (_build_rule(name, raw.get(name)) for name in RULES) if r is not None)
    return RuleSet(size, baseline, alpha, lateness, rules)
