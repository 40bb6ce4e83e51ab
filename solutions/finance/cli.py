"""`verticals finance monitor ...`, `finance report ...`, `finance dashboard DB`, `finance drift DB --run RUN` and
`finance entities RUN` (sentiment per company, with evidence).
Light imports only at import time: the monitor loop and the dashboard (web framework) are imported by
the command that runs them."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from core.foundation.postgres import is_database_url
from core.foundation.quiet import quiet_libraries
from core.serving.flags import add_serve_flags, serve_flags
from solutions.finance.monitor.lines import MAX_LINE_BYTES


def cmd_monitor(args) -> int:
    from solutions.finance.monitor.loop import MonitorConfig, run_monitor  # lazy: ~70 ms of monitor modules

    quiet_libraries()

    db = args.db if is_database_url(args.db) else Path(args.db)
    cfg = MonitorConfig(inputs=tuple(args.inputs), db=db, model=args.model, runtime=args.runtime,
                        watchlist=Path(args.watchlist) if args.watchlist else None,
                        rules=Path(args.rules) if args.rules else None, window=args.window,
                        sinks=tuple(args.sink or ["stdout"]), follow=args.follow, batch_size=args.batch_size,
                        poll_seconds=args.poll_seconds, retry_base_seconds=args.retry_base_seconds,
                        drain_seconds=args.drain_seconds, max_line_bytes=args.max_line_bytes,
                        bad_tickers=args.bad_tickers)
    stopping = []

    def request_stop(signum, _frame):  # finish the batch in hand, then leave
        stopping.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    stats = run_monitor(cfg, stop=lambda: bool(stopping), log=log)
    t = stats.totals
    log(f"read {stats.lines} lines in {stats.seconds:.1f} s ({stats.documents_per_second:.0f}/s): "
        f"{stats.new_documents} new documents, {stats.already_seen} already stored, {stats.quarantined} "
        f"quarantined, {stats.alerts} new alerts")
    log(f"database {cfg.db}: {t['documents']} documents, {t['scored']} scored, {t['alerts']} alerts, "
        f"{t['quarantined']} quarantined {t['quarantine_reasons'] or ''}, {t['undelivered']} undelivered")
    return 0


def cmd_report(args) -> int:
    from solutions.finance.monitor.report import render_report  # lazy: start-up of the console entry

    out = render_report(Path(args.db), Path(args.out), max_entities=args.max_entities)
    print(f"report: {out}")
    return 0


def cmd_dashboard(args) -> int:
    from core.serving.server import serve  # lazy: loads the web framework (the [serve] extra)
    from solutions.finance.dashboard import DashboardAccess, create_app  # lazy: as above

    flags = serve_flags(args)
    token = args.token or os.environ.get("VERTICALS_API_TOKEN") or None
    access = DashboardAccess.from_settings(token, flags.public)
    app = create_app(Path(args.db), access=access, poll_seconds=args.poll_seconds)
    print(f"dashboard of {args.db} on {flags.url}/ "
          + ("(the page asks for the token; or open the address with #token=<token> after it)" if token else
             "without auth (give --token or set VERTICALS_API_TOKEN before opening it beyond this machine)"),
          flush=True)
    serve(app, flags.host, flags.port)
    return 0


def cmd_drift(args) -> int:
    from core.evaluation.drift import DriftThresholds  # lazy: start-up of the console entry
    from solutions.finance.monitor.health import write_monitor_drift  # lazy: start-up of the console entry

    result = write_monitor_drift(Path(args.db), Path(args.run), args.out and Path(args.out),
                                 model_version=args.model_version, since_hours=args.since_hours,
                                 thresholds=DriftThresholds(accuracy_drop=args.max_accuracy_drop))
    alerts = ", ".join(result["alerts"]) or "none"
    est = result["accuracy_estimate"]
    accuracy = (est["status"] if est["estimate"] is None else
                f"{est['estimate']:.3f} ({est['method']}; validation {est['validation_accuracy']:.3f})")
    print(f"model {result['model_version']}: {result['n']} documents, psi_confidence "
          f"{result.get('psi_confidence')}, label_shift {result.get('label_shift')}, estimated accuracy {accuracy}; "
          f"alerts: {alerts}")
    print(f"wrote {result['out']}/drift.md, drift.json, drift.png")
    return 0


def cmd_entities(args) -> int:
    import json  # lazy: only this command prints JSON

    from core.foundation.text import check_text  # lazy: as below
    from core.models.predictor import load_run, model_dir  # lazy: loads torch
    from solutions.finance.entities import load_watchlist  # lazy: only this command reads a watchlist
    from solutions.finance.targeted import predict_entities  # lazy: as above

    quiet_libraries()
    texts = args.text or []
    if args.file:
        texts += [Path(args.file).read_text(encoding="utf-8")] if args.file != "-" else [sys.stdin.read()]
    if not texts:
        raise SystemExit("give --text TEXT (repeatable) or --file PATH (- for stdin)")
    texts = [check_text(t, f"text {i + 1}") for i, t in enumerate(texts)]
    entities = load_watchlist(Path(args.watchlist)) if args.watchlist else (args.entity or None)
    model = load_run(model_dir(Path(args.run)), args.runtime)
    for result in predict_entities(model, texts, entities, max_sentences=args.max_sentences):
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0


def register(subparsers) -> None:
    finance = subparsers.add_parser("finance", help="finance: sentiment risk monitor, its report and dashboard")
    sub = finance.add_subparsers(dest="finance_command", required=True)

    p = sub.add_parser("monitor", help="score a stream of news/posts per company and raise alerts",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", help="JSONL file(s), director(ies) of *.jsonl, - for stdin, or a Redis "
                                             "stream: redis://HOST:PORT/STREAM?group=G&consumer=C&min_idle=MS")
    p.add_argument("--db", required=True, help="SQLite database (created if missing; re-runs resume), or "
                                               "postgresql://USER@HOST:PORT/DB shared by several workers")
    p.add_argument("--model", required=True,
                   help="a run trained by finance/sentiment-full or -lora (run dir or its model/), or 'zeroshot'")
    p.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"], default="torch",
                   help="how to run a trained model (onnx: `verticals export onnx RUN [--int8]` first)")
    p.add_argument("--watchlist", help="YAML: TICKER: [company name, alias, ...]")
    p.add_argument("--rules", help="alert rules YAML (see solutions/finance/monitor/rules.py for keys)")
    p.add_argument("--window", help="aggregation window, e.g. 15m, 1h (default: the rules file's, else 1h)")
    p.add_argument("--sink", action="append", help="stdout, jsonl:PATH or webhook:URL; repeat for several "
                                                   "(default: stdout)")
    p.add_argument("--follow", action="store_true", help="keep watching for new lines and files")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--poll-seconds", type=float, default=1.0)
    p.add_argument("--retry-base-seconds", type=float, default=1.0, help="first delivery retry delay (doubles)")
    p.add_argument("--drain-seconds", type=float, default=10.0,
                   help="without --follow: how long to keep retrying undelivered alerts before exiting")
    p.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                   help="a longer input line is quarantined (skipped without being held in memory)")
    p.add_argument("--bad-tickers", choices=["quarantine", "ignore"], default="quarantine",
                   help="a document's own ticker that is neither cashtag-shaped (1-6 letters, optional .class) nor "
                        "in the watchlist: quarantine the document, or drop the ticker with a warning")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("entities", help="sentiment per company and per whole text, with the sentences that drove it "
                                        "(one JSON line per text)")
    p.add_argument("run", help="a run trained by finance/sentiment-full or -lora")
    p.add_argument("--text", action="append", help="a text to score (repeatable)")
    p.add_argument("--file", help="a text file scored as one document (- for stdin)")
    p.add_argument("--entity", action="append", help="a company name or ticker to report (repeatable; default: "
                                                     "every cashtag)")
    p.add_argument("--watchlist", help="YAML: TICKER: [company name, alias, ...] (instead of --entity)")
    p.add_argument("--max-sentences", type=int, default=400,
                   help="sentences scored per document; the rest are counted and the result flagged truncated")
    p.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"], default="torch")
    p.set_defaults(func=cmd_entities)

    p = sub.add_parser("report", help="self-contained HTML report from a monitor database")
    p.add_argument("--db", required=True)
    p.add_argument("--out", required=True, help="e.g. report.html")
    p.add_argument("--max-entities", type=int, default=40)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="live analyst page over a monitor database: incidents, drill-down, labelling")
    p.add_argument("db", help="the monitor's SQLite database (--db of `verticals finance monitor`)")
    add_serve_flags(p, default_port=8050)
    p.add_argument("--token", default=None,
                   help="bearer token for the API (default: env VERTICALS_API_TOKEN; the env keeps it out of `ps`)")
    p.add_argument("--poll-seconds", type=float, default=5.0,
                   help="how often the page checks for new data (default: %(default)s)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("drift", help="drift of the monitor's scores against the sentiment run's validation baseline "
                                     "(markdown + png)")
    p.add_argument("db", help="the monitor's SQLite database")
    p.add_argument("--run", required=True, help="the sentiment run the monitor scores with (its drift baseline)")
    p.add_argument("--out", help="output folder (default: drift-<model version>/ beside DB)")
    p.add_argument("--model-version", help="the scores.model to report on (default: the one that scored the most)")
    p.add_argument("--since-hours", type=float, help="only documents within this many hours of the newest one")
    p.add_argument("--max-accuracy-drop", type=float, default=0.05,
                   help="alert when the accuracy estimated without labels is this far below the validation accuracy")
    p.set_defaults(func=cmd_drift)
