"""The finance risk monitor: end-to-end throughput and alert precision/recall on planted events.

Protocol: a generated 30-day stream over 20 fictional tickers (templated headlines and posts:
background 75% neutral / 15% positive / 10% negative, about 0.4 documents per ticker per trading
hour, plus macro headlines that mention no company). Planted events: 6 negative bursts (18-30
negative documents for one ticker within 3-4 hours) and 3 positive bursts (a volume spike that is
not bad news). Ground truth: an alert is correct if its entity and window overlap a planted event
that the rule should catch (negative rules: negative bursts; volume_spike: any burst). Recall =
planted events caught by at least one correct alert of that rule. Three stream seeds; the model is
the full fine-tune from benchmarks/finance_phrasebank.py; default rules (1h window, 7d baseline).
Throughput = lines / wall seconds of the monitor loop (read, parse, extract, score, store,
aggregate, alert, deliver), after the model is loaded, on this machine's CPUs (load recorded);
also lines per CPU-second of the process, which does not depend on what else the machine runs.
Also the demo stream's one planted event (datasets/demo_finance_stream/events.yaml).

    python -m benchmarks.finance_monitor [--model RUN_DIR] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.record import write_record

NEGATIVE = ["{name} shares plunge after profit warning", "{name} cuts 800 jobs as sales fall",
            "Regulator opens probe into {name} accounting", "${t} down 12% after guidance cut, ugly",
            "{name} reports quarterly loss and misses estimates", "Analysts downgrade {name} to sell",
            "{name} CEO resigns amid fraud allegations", "{name} recalls products after safety failures"]
POSITIVE = ["{name} beats estimates and raises full-year guidance", "{name} wins a major government contract",
            "${t} up 8% on record revenue", "{name} quarterly profit rises 20%",
            "{name} announces share buyback after strong year"]
NEUTRAL = ["{name} to report quarterly results on Thursday", "{name} appoints a new chief financial officer",
           "{name} opens an office in Berlin", "${t} trading flat ahead of earnings",
           "{name} holds its annual general meeting in May", "{name} files its annual report"]
MACRO = ["Stocks open mixed as investors await inflation data", "Oil steady ahead of OPEC meeting",
         "Central bank leaves rates unchanged", "Treasury yields edge higher in quiet trade"]
START = datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()  # a Monday


def watchlist(n: int = 20) -> dict[str, list[str]]:
    names = ["Aldren", "Brightwater", "Calder", "Dunmore", "Ellison", "Farrow", "Galvin", "Harlow", "Ives",
             "Jessop", "Kettering", "Lorne", "Merriden", "Norcott", "Oakham", "Prescott", "Quarry", "Radley",
             "Stanton", "Thorne"]
    return {f"{n[:3].upper()}{i % 10}": [f"{n} Group", n] for i, n in enumerate(names[:n])}


def generate(seed: int, days: int = 30) -> tuple[list[dict], list[dict], dict]:
    rng = np.random.default_rng(seed)
    wl = watchlist()
    tickers = list(wl)
    docs = []

    def doc(ts, template, ticker=None):
        name = wl[ticker][int(rng.integers(2))] if ticker else ""
        docs.append({"id": f"s{seed}-{len(docs)}", "ts": ts, "text": template.format(name=name, t=ticker)})

    for day in range(days):
        if day % 7 >= 5:
            continue
        open_ts = START + day * 86400 + 13 * 3600  # 13:00-21:00 UTC trading hours
        for ticker in tickers:
            for ts in open_ts + np.sort(rng.uniform(0, 8 * 3600, rng.poisson(0.4 * 8))):
                kind = rng.choice(3, p=[0.10, 0.75, 0.15])
                doc(ts, rng.choice([NEGATIVE, NEUTRAL, POSITIVE][kind]), ticker)
        for ts in open_ts + rng.uniform(0, 8 * 3600, 10):
            doc(ts, rng.choice(MACRO))
    events = []
    trading_days = [d for d in range(10, days) if d % 7 < 5]  # after a week of baseline
    chosen = rng.choice(len(tickers), 9, replace=False)
    for k, ticker_idx in enumerate(chosen):
        ticker, day = tickers[ticker_idx], trading_days[int(rng.integers(len(trading_days)))]
        kind = "negative_burst" if k < 6 else "positive_burst"
        start = START + day * 86400 + (14 + int(rng.integers(4))) * 3600
        hours = int(rng.integers(3, 5))
        pool = NEGATIVE if kind == "negative_burst" else POSITIVE
        for ts in start + np.sort(rng.uniform(0, hours * 3600, int(rng.integers(18, 31)))):
            doc(ts, rng.choice(pool), ticker)
        events.append({"ticker": ticker, "start": start, "end": start + hours * 3600, "kind": kind})
    docs.sort(key=lambda d: d["ts"])
    for d in docs:
        d["ts"] = datetime.fromtimestamp(d["ts"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return docs, events, wl


def alert_quality(alerts: list[dict], events: list[dict]) -> dict:
    """Per rule: precision over its alerts, recall over the events it should catch (see docstring)."""
    wanted = {"negative_share_spike": {"negative_burst"}, "sentiment_drop": {"negative_burst"},
              "volume_spike": {"negative_burst", "positive_burst"}}
    out = {}
    for rule, kinds in wanted.items():
        mine = [a for a in alerts if a["rule"] == rule]
        targets = [e for e in events if e["kind"] in kinds]
        hit = lambda a, e: (a["entity"] == e["ticker"] and a["window_start"] < e["end"]  # noqa: E731
                            and a["window_end"] > e["start"])
        correct = [a for a in mine if any(hit(a, e) for e in targets)]
        caught = [e for e in targets if any(hit(a, e) for a in mine)]
        out[rule] = {"alerts": len(mine), "precision": len(correct) / len(mine) if mine else None,
                     "recall": len(caught) / len(targets) if targets else None, "events": len(targets)}
    return out


def run_stream(docs, wl, model, workdir: Path) -> tuple[dict, list[dict]]:
    import psutil
    import yaml

    from solutions.finance.monitor.loop import MonitorConfig, run_monitor
    from solutions.finance.monitor.store import Store

    stream, wl_path = workdir / "stream.jsonl", workdir / "watchlist.yaml"
    stream.write_text("".join(json.dumps(d) + "\n" for d in docs))
    wl_path.write_text(yaml.safe_dump(wl))
    cfg = MonitorConfig(inputs=(str(stream),), db=workdir / "m.db", model="loaded", watchlist=wl_path,
                        sinks=(f"jsonl:{workdir / 'alerts.jsonl'}",), drain_seconds=0)
    process = psutil.Process()
    cpu0 = sum(process.cpu_times()[:2])
    stats = run_monitor(cfg, model=model)
    cpu = sum(process.cpu_times()[:2]) - cpu0
    store = Store(workdir / "m.db", 3600)
    alerts = store.alerts()
    store.close()
    with sqlite3.connect(workdir / "m.db") as conn:  # sentences scored, as benchmarks/finance_throughput counts them
        sentences = conn.execute("SELECT COALESCE(SUM(sentences), 0) FROM scores").fetchone()[0]
    return {"lines": stats.lines, "seconds": round(stats.seconds, 2), "sentences": sentences,
            "documents_per_second": round(stats.documents_per_second, 1),
            "sentences_per_second": round(sentences / stats.seconds, 1) if stats.seconds else None,
            "cpu_seconds": round(cpu, 2),
            "documents_per_cpu_second": round(stats.lines / cpu, 1) if cpu else None, **stats.totals}, alerts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="benchmarks/runs/finance-sentiment-full-seed0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"], default="torch",
                        help="the scorer's runtime (onnx ones need `verticals export onnx RUN [--int8]` first); "
                             "a non-torch runtime writes its own record, finance_monitor_<runtime>")
    args = parser.parse_args(argv)
    from core.foundation.quiet import quiet_libraries
    from core.data.catalog import builtin_datasets_dir
    from solutions.finance.monitor.loop import load_scorer

    quiet_libraries()
    model = load_scorer(args.model, args.runtime)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        docs, events, wl = generate(seed)
        with tempfile.TemporaryDirectory() as tmp:
            run, alerts = run_stream(docs, wl, model, Path(tmp))
        runs.append({"seed": seed, "events": events, **run, "quality": alert_quality(alerts, events)})
        print(f"seed {seed}: {run['lines']} docs in {run['seconds']} s = {run['documents_per_second']}/s; "
              f"{json.dumps(runs[-1]['quality'])}", flush=True)
    demo = builtin_datasets_dir() / "demo_finance_stream"
    import yaml

    demo_docs = [json.loads(line) for line in (demo / "stream.jsonl").read_text().splitlines() if line.strip()]
    demo_events = [{"ticker": e["ticker"], "kind": e["kind"],
                    "start": datetime.fromisoformat(e["start"].replace("Z", "+00:00")).timestamp(),
                    "end": datetime.fromisoformat(e["end"].replace("Z", "+00:00")).timestamp()}
                   for e in yaml.safe_load((demo / "events.yaml").read_text())["events"]]
    with tempfile.TemporaryDirectory() as tmp:
        demo_run, demo_alerts = run_stream(demo_docs, yaml.safe_load((demo / "watchlist.yaml").read_text()),
                                           model, Path(tmp))
    demo_quality = alert_quality(demo_alerts, demo_events)

    def stat(values):
        values = [v for v in values if v is not None]
        return (float(np.mean(values)), float(np.std(values))) if values else (None, None)

    summary = {"documents_per_second": stat([r["documents_per_second"] for r in runs]),
               "documents_per_cpu_second": stat([r["documents_per_cpu_second"] for r in runs]),
               "sentences_per_second": stat([r["sentences_per_second"] for r in runs])}
    for rule in ("negative_share_spike", "sentiment_drop", "volume_spike"):
        for metric in ("precision", "recall"):
            summary[f"{rule}_{metric}"] = stat([r["quality"][rule][metric] for r in runs])
    fmt = lambda ms: "-" if ms[0] is None else f"{ms[0]:.2f} ± {ms[1]:.2f}"  # noqa: E731
    lines = [f"Generated streams ({len(seeds)} seeds, {int(np.mean([r['lines'] for r in runs]))} documents each, "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end): "
             f"**{fmt(summary['documents_per_second'])} documents/s** end to end (model: {args.model}, "
             f"runtime {args.runtime}), {fmt(summary['sentences_per_second'])} sentences/s; "
             f"{fmt(summary['documents_per_cpu_second'])} documents per CPU-second of the monitor process "
             f"(what it would sustain per core it had to itself).", "",
             "| rule | precision | recall | alerts per stream |", "|---|---|---|---|"]
    for rule in ("negative_share_spike", "sentiment_drop", "volume_spike"):
        n = np.mean([r["quality"][rule]["alerts"] for r in runs])
        lines.append(f"| {rule} | {fmt(summary[rule + '_precision'])} | {fmt(summary[rule + '_recall'])} | {n:.1f} |")
    caught = {rule: q["recall"] for rule, q in demo_quality.items()}
    lines += ["", f"Demo stream ({demo_run['lines']} documents, 1 planted BRDG negative burst): "
                  f"{len(demo_alerts)} alerts; recall per rule {caught}; "
                  f"{demo_run['documents_per_second']} documents/s, {demo_run['sentences_per_second']} sentences/s "
                  f"({demo_run['sentences']} sentences scored)."]
    md = "\n".join(lines) + "\n"
    name = "finance_monitor" + ("" if args.runtime == "torch" else "_" + args.runtime.replace("-", "_"))
    write_record(name, {
        "protocol": __doc__.split("\n\n")[1], "model": args.model, "runtime": args.runtime, "seeds": seeds, "runs": runs,
        "summary": summary, "demo": {"run": demo_run, "quality": demo_quality, "alerts": demo_alerts},
        "load_average": os.getloadavg()}, md)
    print(md)


if __name__ == "__main__":
    main()
