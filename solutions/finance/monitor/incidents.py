"""Alerts -> incidents with a severity: what the analyst's page lists first. Pure functions.

**Incident.** The alerts of one entity whose windows are consecutive or overlap, whatever rule
raised them: sorted by window start, an alert joins the current incident when its window starts
at or before the end of the incident so far (`window_start <= end`: touching windows chain),
else it opens a new one. An incident's id is its lowest alert id, so it stays stable while later
alerts extend it (alerts are never rewritten or deleted).

**Severity** of one alert, from its rule and how far past normal it is (`magnitude`):

    negative_share_spike  value - baseline (share points)     medium >= 0.25, high >= 0.45
    sentiment_drop        baseline - value (score points)     medium >= 0.75, high >= 1.0
    volume_spike          value / max(baseline, 0.5) (ratio)   medium >= 8, never high

The rules fire at a z of 3, a drop of 0.5 and a 4x ratio by default, so an alert that only just
fired is `low`. A volume spike alone is at most `medium`: more talk is not bad news by itself.
An incident's severity is its highest alert's, raised one level (to at most `high`) when it is
corroborated: two or more different rules fired in it, or it spans three or more windows.
These bands are a reading aid for triage, chosen by hand, not fitted; the alert itself is the
rule's decision.
"""

from __future__ import annotations

SEVERITIES = ("low", "medium", "high")
# rule -> (medium at, high at): thresholds on `magnitude`; None = never that level
BANDS = {"negative_share_spike": (0.25, 0.45), "sentiment_drop": (0.75, 1.0), "volume_spike": (8.0, None)}
CORROBORATING_WINDOWS = 3


def magnitude(rule: str, value: float, baseline: float) -> float:
    """How far past its baseline an alert is, in the rule's own unit (see the module doc)."""
    if rule == "negative_share_spike":
        return value - baseline
    if rule == "sentiment_drop":
        return baseline - value
    if rule == "volume_spike":
        return value / max(baseline, 0.5)
    return 0.0


def alert_severity(rule: str, value: float, baseline: float) -> str:
    medium, high = BANDS.get(rule, (None, None))
    size = magnitude(rule, value, baseline)
    if high is not None and size >= high:
        return "high"
    if medium is not None and size >= medium:
        return "medium"
    return "low"


def incident_severity(alerts: list[dict], window: int) -> str:
    """Highest alert severity, one level up when corroborated (2+ rules, or 3+ windows)."""
    level = max(SEVERITIES.index(alert_severity(a["rule"], a["value"], a["baseline"])) for a in alerts)
    windows = {a["window_start"] // max(window, 1) for a in alerts}
    if len({a["rule"] for a in alerts}) >= 2 or len(windows) >= CORROBORATING_WINDOWS:
        level = min(level + 1, len(SEVERITIES) - 1)
    return SEVERITIES[level]


def incident_status(alerts: list[dict]) -> str:
    """open (some alert has no verdict), confirmed (all judged, one or more confirmed), false_alarm."""
    verdicts = [a.get("verdict") for a in alerts]
    if any(v is None for v in verdicts):
        return "open"
    return "confirmed" if "confirmed" in verdicts else "false_alarm"


def group_incidents(alerts: list[dict], window: int) -> list[dict]:
    """Alerts (dicts with id, entity, rule, window_start, window_end, value, baseline, optional
    verdict) -> incidents, most severe first, then the most recent first (then by entity).
    Each incident: id, entity, start, end, windows, rules, severity, status, alerts (time order)."""
    by_entity: dict[str, list[dict]] = {}
    for alert in alerts:
        by_entity.setdefault(alert["entity"], []).append(alert)
    incidents = []
    for entity, mine in by_entity.items():
        current: list[dict] = []
        for alert in sorted(mine, key=lambda a: (a["window_start"], a["id"])):
            if current and alert["window_start"] > max(a["window_end"] for a in current):
                incidents.append(_incident(entity, current, window))
                current = []
            current.append(alert)
        if current:
            incidents.append(_incident(entity, current, window))
    incidents.sort(key=lambda i: (-SEVERITIES.index(i["severity"]), -i["end"], i["entity"]))
    return incidents


def _incident(entity: str, alerts: list[dict], window: int) -> dict:
    alerts = [a | {"severity": alert_severity(a["rule"], a["value"], a["baseline"])} for a in alerts]  # copies
    return {"id": min(a["id"] for a in alerts), "entity": entity,
            "start": min(a["window_start"] for a in alerts), "end": max(a["window_end"] for a in alerts),
            "windows": len({a["window_start"] for a in alerts}), "rules": sorted({a["rule"] for a in alerts}),
            "severity": incident_severity(alerts, window), "status": incident_status(alerts), "alerts": alerts}
