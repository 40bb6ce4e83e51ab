"""The plan's choice: a prediction per system (`Prediction`), whether it meets the target and the
constraints (`meets`), the cheapest that does (`cheapest`) and the cost-accuracy frontier (`pareto`).

Pure functions over predictions; how each number is predicted is core.plan.predict's and
core.plan.trial's, and what the plan measures is core.plan.measure's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    system: str
    how: str  # measured | prior | trial (core.plan.trial: a trial fine-tune on the user's data)
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    train_seconds: float
    train_core_hours: float
    train_usd: float
    peak_rss_mb: float
    p50_ms: float
    usd_per_million: float
    run_seconds: float = 0.0  # the whole run's wall: setup + ledger + final evaluation


def meets(p: Prediction, target: float, budget_s: float | None, latency_s: float | None,
          optimistic: bool = False) -> list[str]:
    """Why `p` fails the target or a constraint ([] when it meets them all); `optimistic`: its
    accuracy is the top of its predicted range."""
    why = []
    if (p.accuracy_high if optimistic else p.accuracy) < target:
        why.append(f"accuracy {100 * p.accuracy:.1f}% < {100 * target:.1f}%")
    if budget_s is not None and p.train_seconds > budget_s:
        why.append(f"training {p.train_seconds:.0f} s > budget {budget_s:.0f} s")
    if latency_s is not None and p.p50_ms > 1000 * latency_s:
        why.append(f"p50 {p.p50_ms:.1f} ms > {1000 * latency_s:g} ms")
    return why


def cheapest(predictions: list[Prediction], target: float, budget_s: float | None = None,
             latency_s: float | None = None, optimistic: bool = False) -> Prediction | None:
    """The prediction meeting everything with the lowest training dollars (then $/1e6 predictions)."""
    ok = [p for p in predictions if not meets(p, target, budget_s, latency_s, optimistic)]
    return min(ok, key=lambda p: (p.train_usd, p.usd_per_million)) if ok else None


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: True where no other point is at most as costly and at least
    as accurate with one of the two strictly better."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]
