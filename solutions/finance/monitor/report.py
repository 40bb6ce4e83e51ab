"""`verticals finance report`: one self-contained HTML page from a monitor database.

Per entity (entities with alerts first, then by volume): an inline SVG timeline with document
volume per window (grey bars, right scale), mean score per window (blue line, -1..1) and its EWMA
(dashed), alerts marked in red with their rule in a tooltip; then the alert table with evidence
documents. No JavaScript, no external files: it opens from a mail attachment.
"""

from __future__ import annotations

import html
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from core.foundation.errors import UserError

WIDTH, HEIGHT, PAD = 920, 170, 40


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _read(db_path: Path) -> tuple[dict, list[dict], dict]:
    if not Path(db_path).is_file():
        raise UserError(f"monitor database not found: {db_path}. Run `verticals finance monitor ... --db {db_path}` first.")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        series: dict[str, list[tuple]] = {}
        for row in db.execute("SELECT entity, window_start, window_size, count, mean_score, ewma FROM aggregates "
                              "ORDER BY entity, window_start"):
            series.setdefault(row[0], []).append(row[1:])
        keys = ("entity", "rule", "window_start", "window_end", "value", "baseline", "detail", "evidence")
        alerts = [dict(zip(keys, r)) for r in db.execute(f"SELECT {', '.join(keys)} FROM alerts ORDER BY window_start")]
        ids = {i for a in alerts for i in json.loads(a["evidence"])[:5]}
        texts = {}
        if ids:
            marks = ",".join("?" * len(ids))
            texts = dict(db.execute(f"SELECT id, text FROM documents WHERE id IN ({marks})", sorted(ids)))
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db_path} is not a monitor database ({exc})") from None
    finally:
        db.close()
    return series, alerts, texts


def timeline_svg(rows: list[tuple], alerts: list[dict], t0: float, t1: float) -> str:
    """rows: (window_start, window_size, count, mean_score, ewma) in time order."""
    span = max(t1 - t0, 1.0)
    x = lambda t: PAD + (t - t0) / span * (WIDTH - 2 * PAD)  # noqa: E731
    y_score = lambda s: PAD / 2 + (1 - s) / 2 * (HEIGHT - PAD)  # noqa: E731
    top = max(r[2] for r in rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" class="chart">',
             f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y_score(0):.1f}" y2="{y_score(0):.1f}" stroke="#bbb"/>']
    for start, size, count, _, _ in rows:
        h = count / top * (HEIGHT - PAD) * 0.6
        parts.append(f'<rect x="{x(start):.1f}" y="{HEIGHT - PAD / 2 - h:.1f}" width="{max(1.5, x(start + size) - x(start)):.1f}" '
                     f'height="{h:.1f}" fill="#ccc"><title>{_iso(start)}: {count} docs</title></rect>')
    for column, style in ((3, 'stroke="#1f5fbf" stroke-width="1.5"'), (4, 'stroke="#1f5fbf" stroke-dasharray="4 3"')):
        points = " ".join(f"{x(r[0] + r[1] / 2):.1f},{y_score(r[column]):.1f}" for r in rows)
        parts.append(f'<polyline fill="none" {style} points="{points}"/>')
    for a in alerts:
        cx = x((a["window_start"] + a["window_end"]) / 2)
        parts.append(f'<path d="M{cx - 5:.1f},{PAD / 2 - 12} L{cx + 5:.1f},{PAD / 2 - 12} L{cx:.1f},{PAD / 2 - 3} Z" '
                     f'fill="#d62728"><title>{html.escape(a["rule"])}: {html.escape(a["detail"])}</title></path>')
    parts += [f'<text x="{PAD}" y="{HEIGHT - 4}" font-size="10">{_iso(t0)}</text>',
              f'<text x="{WIDTH - PAD}" y="{HEIGHT - 4}" font-size="10" text-anchor="end">{_iso(t1)}</text>',
              f'<text x="4" y="{y_score(1) + 4:.1f}" font-size="10">+1</text>',
              f'<text x="4" y="{y_score(-1) + 4:.1f}" font-size="10">-1</text>',
              f'<text x="{WIDTH - 4}" y="{HEIGHT - PAD / 2 - (HEIGHT - PAD) * 0.6:.1f}" font-size="10" '
              f'text-anchor="end">{top}</text>', "</svg>"]
    return "".join(parts)


def render_report(db_path: Path, out: Path, max_entities: int = 40) -> Path:
    series, alerts, texts = _read(Path(db_path))
    alerted = {a["entity"] for a in alerts}
    order = sorted(series, key=lambda e: (e not in alerted, -sum(r[2] for r in series[e]), e))[:max_entities]
    t0 = min((r[0] for rows in series.values() for r in rows), default=0)
    t1 = max((r[0] + r[1] for rows in series.values() for r in rows), default=1)
    body = [f"<h1>Finance risk monitor</h1><p>{len(series)} entities, {len(alerts)} alerts, "
            f"windows from {_iso(t0)} to {_iso(t1)} UTC. Grey: documents per window; blue: mean "
            f"sentiment score P(pos)-P(neg) (dashed: EWMA); red: alerts.</p>"]
    for entity in order:
        mine = [a for a in alerts if a["entity"] == entity]
        body.append(f"<h2>{html.escape(entity)} <small>{sum(r[2] for r in series[entity])} documents, "
                    f"{len(mine)} alerts</small></h2>{timeline_svg(series[entity], mine, t0, t1)}")
    rows = []
    for a in alerts:
        ids = json.loads(a["evidence"])
        shown = "".join(f"<li><code>{html.escape(i)}</code> {html.escape(texts.get(i, ''))}</li>" for i in ids[:5])
        more = f"<li>... and {len(ids) - 5} more</li>" if len(ids) > 5 else ""
        rows.append(f"<tr><td>{html.escape(a['entity'])}</td><td>{html.escape(a['rule'])}</td>"
                    f"<td>{_iso(a['window_start'])}</td><td>{a['value']:.3f}</td><td>{a['baseline']:.3f}</td>"
                    f"<td>{html.escape(a['detail'])}</td><td><ul>{shown}{more}</ul></td></tr>")
    body.append("<h2>Alerts</h2><table><tr><th>entity</th><th>rule</th><th>window (UTC)</th><th>value</th>"
                "<th>baseline</th><th>detail</th><th>evidence</th></tr>" + "".join(rows) + "</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ddd;padding:4px;vertical-align:top}ul{margin:0;padding-left:1.2em}"
             "small{color:#666;font-weight:normal}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Finance risk monitor</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
