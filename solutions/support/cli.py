"""`verticals support route`, `support drift`, `support select` and `verticals serve`. Light imports only
at import time: the modules that load torch or the web framework are imported by the command that runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.foundation.errors import UserError
from core.foundation.quiet import quiet_libraries
from core.foundation.text import texts_from_args, texts_from_jsonl
from core.mlops.prediction_logs import open_prediction_log, shown
from core.mlops.registries import REGISTRY_STATE_HELP, is_registry, open_registry
from core.mlops.registry import REGISTRY_FILE, STATE_MARKER
from core.mlops.selection import STRATEGIES, check_budget
from core.models.multilabel import load_multilabel_head
from core.models.predictor import load_run, model_dir
from core.serving.flags import add_serve_flags, serve_flags
from solutions.support.deployment import Deployment, RegistryWatcher, load_served
from solutions.support.labelling import check_sheet_path, select_queries
from solutions.support.router import IntentRouter, RouterSettings


def _settings(args):
    return RouterSettings(min_confidence=args.min_confidence, min_margin=args.min_margin,
                          use_out_of_scope=not args.no_out_of_scope, top_k=args.top_k)


def _texts(args) -> list[str]:
    if args.texts:
        return texts_from_args(args.texts)
    if args.input and args.input != "-":
        try:
            with open(args.input, encoding="utf-8") as handle:
                texts = texts_from_jsonl(handle, args.input)
        except OSError as exc:
            raise UserError(f"cannot read --input {args.input}: {exc.strerror}") from None
    else:
        texts = texts_from_jsonl(sys.stdin, "stdin")
    if not texts:
        raise UserError("no texts to route: pass them as arguments, --input FILE.jsonl, or JSONL on stdin")
    return texts


def cmd_route(args) -> int:
    texts = _texts(args)
    quiet_libraries()
    router = IntentRouter.from_run(Path(args.run_dir), args.routes and Path(args.routes), _settings(args), args.runtime, args.threads)
    for start in range(0, len(texts), 256):
        for row in router.route_batch(texts[start:start + 256]):
            print(json.dumps(row))
    return 0


def _prediction_log(args):
    if args.no_log:
        return None
    return open_prediction_log(args.log, store_text=args.log_text)


def cmd_serve(args) -> int:
    from core.serving.app import Access, ServiceLimits  # lazy: loads the web framework (the [serve] extra)
    from core.serving.server import serve  # lazy: as above
    from core.evaluation.drift import DriftThresholds  # lazy: numpy-heavy drift modules
    from solutions.support.monitoring import MonitorSettings  # lazy: as above
    from solutions.support.service import create_app  # lazy: as above

    quiet_libraries()
    if (args.run_dir is None) == (args.registry is None):
        raise UserError("give a run directory to serve, or --registry DIR to serve (and follow) its champion")
    if args.reload_interval <= 0:
        raise UserError(f"--reload-interval must be positive seconds, got {args.reload_interval}")
    if not 0 <= args.max_accuracy_drop <= 1:
        raise UserError(f"--max-accuracy-drop must be between 0 and 1 (a share of accuracy), got {args.max_accuracy_drop}")
    if args.parallel_batches < 1:
        raise UserError(f"--parallel-batches must be at least 1, got {args.parallel_batches}")
    flags = serve_flags(args)
    access = Access.from_flags(flags)
    settings = _settings(args)

    def make_router(path: Path):
        return IntentRouter.from_run(path, args.routes and Path(args.routes), settings, args.runtime, args.threads)

    watcher = None
    if args.registry:
        if not is_registry(args.registry):
            raise UserError(f"{args.registry} is not a model registry (no {REGISTRY_FILE} or {STATE_MARKER}); "
                            f"create one with `verticals retrain ... --registry DIR`")
        registry = open_registry(args.registry, args.registry_state)
        version = registry.champion()
        if version is None:
            raise UserError(f"{args.registry} has no champion yet; promote a version: `verticals registry promote`")
        deployment = Deployment(load_served(registry.version_path(version), make_router, version))
        watcher = RegistryWatcher(registry, deployment, lambda path, v: load_served(path, make_router, v),
                                  args.reload_interval)
    else:
        deployment = Deployment(load_served(Path(args.run_dir), make_router))
    prediction_log = _prediction_log(args)
    monitoring = MonitorSettings(thresholds=DriftThresholds(accuracy_drop=args.max_accuracy_drop))
    limits = ServiceLimits(parallel_batches=args.parallel_batches)
    app = create_app(deployment, access=access, prediction_log=prediction_log, watcher=watcher, monitoring=monitoring,
                     limits=limits)
    source = f"registry {args.registry} (champion {deployment.current.version}, polled every {args.reload_interval:g} s)" \
        if args.registry else f"{args.run_dir} (model {deployment.current.version})"
    logged = "not logged" if prediction_log is None else \
        f"logged to {shown(args.log)} ({'with texts' if args.log_text else 'text hashes only'})"
    print(f"serving {source} on {flags.url} (docs: /docs); predictions {logged} {access.describe()}", flush=True)
    try:
        serve(app, flags.host, flags.port, limits)
    finally:
        if prediction_log is not None:
            prediction_log.close()
    return 0


def cmd_drift(args) -> int:
    from core.evaluation.drift import DriftThresholds  # lazy: numpy-heavy drift modules
    from solutions.support.drift_report import MIN_ROWS, write_drift_report  # lazy: ~50 ms of report modules

    quiet_libraries()

    result = write_drift_report(args.db, Path(args.run), args.out and Path(args.out),
                                model_version=args.model_version, since_hours=args.since_hours, settings=_settings(args),
                                thresholds=DriftThresholds(accuracy_drop=args.max_accuracy_drop))
    alerts = ", ".join(result["alerts"]) or "none"
    print(f"model {result['model_version']}: {result['n']} logged predictions; psi_confidence "
          f"{result['psi_confidence'] if result['psi_confidence'] is None else round(result['psi_confidence'], 3)}, "
          f"label_shift {result['label_shift'] if result['label_shift'] is None else round(result['label_shift'], 3)}; "
          f"alerts: {alerts}{' (few predictions: mostly noise)' if result['n'] < MIN_ROWS else ''}")
    est = result["accuracy_estimate"]
    print("estimated accuracy: " + (est["status"] if est["estimate"] is None else
                                    f"{est['estimate']:.3f} ({est['method']}, validation {est['validation_accuracy']:.3f})"))
    print(f"wrote {result['out']}/drift.md, drift.json, drift.png")
    return 0


def cmd_select(args) -> int:
    check_budget(args.budget)
    model_dir(args.run)  # a run that holds no classifier fails here, before anything is read
    check_sheet_path(args.out, args.overwrite)
    quiet_libraries()
    # the sources stay str: Path() would fold a postgresql:// URL's "//"
    selection = select_queries(load_run(Path(args.run)), args.source, args.budget, strategy_name=args.strategy,
                               multi_label=load_multilabel_head(model_dir(args.run)),
                               seed=args.seed, labelled=list(args.labelled), text_column=args.text_column,
                               max_candidates=args.max_candidates)
    out = selection.write_csv(args.out, overwrite=args.overwrite)
    s = selection.summary
    print(f"wrote {s['picked']} queries to label to {out} (strategy {s['strategy']}, seed {s['seed']}): chosen from "
          f"{s['candidates']} distinct unlabelled texts of {s['rows_read']} rows; {s['skipped_labelled']} rows already "
          f"labelled, {s['duplicates']} repeats")
    if s["strategy"] != args.strategy:
        print(f"note: {shown(args.source)} keeps only text hashes, so the run cannot score its queries: ranked by the served "
              f"model's logged confidence ({s['strategy']}); serve with --log-text to use {args.strategy}", file=sys.stderr)
    if s["sampled_from"]:
        print(f"note: scored a random sample of {s['scored']} of the {s['sampled_from']} unlabelled texts "
              f"(--max-candidates)", file=sys.stderr)
    if s["not_scored"]:
        print(f"note: {s['not_scored']} logged texts kept only as hashes were not scored", file=sys.stderr)
    return 0


def _router_settings_args(p) -> None:
    p.add_argument("--min-confidence", type=float, default=0.5, help="hand over below this calibrated confidence")
    p.add_argument("--min-margin", type=float, default=0.1, help="hand over when top-2 are closer than this")
    p.add_argument("--no-out-of-scope", action="store_true", help="do not hand over out-of-scope queries")
    p.add_argument("--top-k", type=int, default=3)


def _router_args(p, run_required: bool = True) -> None:
    p.add_argument("run_dir", help="a run directory from `verticals train support/...`",
                   **({} if run_required else {"nargs": "?", "default": None}))
    p.add_argument("--routes", help="routing table YAML: routes: {intent: {queue, priority, reply}}")
    _router_settings_args(p)
    p.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"], default="torch",
                   help="onnx / onnx-int8: ONNX Runtime (run `verticals export onnx RUN_DIR [--int8]` first)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: all cores; 1 gives the lowest single-query latency)")


def register(sub) -> None:
    support = sub.add_parser("support", help="intent routing for support bots")
    support_sub = support.add_subparsers(dest="support_command", required=True)
    p = support_sub.add_parser("route", help="route texts (arguments, --input FILE.jsonl, or JSONL on stdin)")
    _router_args(p)
    p.add_argument("texts", nargs="*")
    p.add_argument("--input", help="JSONL file of {\"text\": ...} (- for stdin)")
    p.set_defaults(func=cmd_route)

    p = support_sub.add_parser("drift", help="drift report (markdown + png) of a prediction log against a run's baseline")
    p.add_argument("db", help="the prediction log `verticals serve` wrote (--log: default predictions.db, or the "
                              "postgresql:// URL its replicas share)")
    p.add_argument("--run", required=True, help="the served run directory (its drift baseline; a registry's runs/VERSION)")
    p.add_argument("--out", help="output folder (default: drift-<model version>/ beside DB)")
    p.add_argument("--model-version", help="the logged model version to report (default: the one --run is served as)")
    p.add_argument("--since-hours", type=float, help="only predictions of the last H hours (default: all)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.05,
                   help="alert when the accuracy estimated without labels is this far below the validation accuracy")
    _router_settings_args(p)
    p.set_defaults(func=cmd_drift)

    p = support_sub.add_parser("select", help="choose which queries to label next (active learning): a CSV sheet")
    p.add_argument("source", help="the prediction log `verticals serve --log` wrote (a file or a postgresql:// "
                                  "URL), or a file of queries "
                                  "(.txt one per line; .csv, .tsv, .jsonl with a text column)")
    p.add_argument("--run", required=True, help="the classifier run that scores the queries (e.g. the served one)")
    p.add_argument("--budget", type=int, required=True, help="how many queries to pick")
    p.add_argument("--strategy", choices=list(STRATEGIES), default="margin",
                   help="margin (default), entropy, badge, coreset or random (see docs/support.md)")
    p.add_argument("--out", default="picks.csv", help="the labelling sheet to write (default picks.csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--seed", type=int, default=0, help="seed of badge, coreset and random (default 0)")
    p.add_argument("--labelled", action="append", default=[], metavar="PATH",
                   help="texts already labelled, skipped and (coreset) counted as covered: a prediction log or a "
                        "file with a text column, e.g. the run's training CSV (repeatable)")
    p.add_argument("--text-column", default="text", help="the text column of .csv/.tsv/.jsonl files (default text)")
    p.add_argument("--max-candidates", type=int, default=20_000,
                   help="score at most this many distinct unlabelled texts; a larger pool is sampled at random "
                        "(seeded), so a large log is bounded work (default 20000)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("serve", help="HTTP intent-routing service (POST /v1/route, /v1/feedback, GET /v1/drift, "
                                     "/healthz, /readyz, /metrics, /docs)")
    _router_args(p, run_required=False)
    p.add_argument("--registry", help="serve this model registry's champion instead of RUN_DIR, and hot-swap to a "
                                      "new champion (promote / rollback) without a restart")
    p.add_argument("--registry-state", metavar="URL", help="with --registry: " + REGISTRY_STATE_HELP)
    p.add_argument("--reload-interval", type=float, default=5.0,
                   help="with --registry: seconds between checks for a new champion (default 5)")
    p.add_argument("--log", default="predictions.db",
                   help="prediction log for feedback and drift reports: an SQLite file for one process (default: "
                        "predictions.db here), or postgresql://USER@HOST/DB, one database every replica shares "
                        "(the [scale] extra)")
    p.add_argument("--no-log", action="store_true", help="log nothing (then no POST /v1/feedback)")
    p.add_argument("--log-text", action="store_true",
                   help="keep routed texts in the log (default: only their sha256; feedback must then send the text)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.05,
                   help="GET /v1/drift and /metrics alert when the accuracy estimated without labels is this far "
                        "below the validation accuracy (default 0.05)")
    p.add_argument("--parallel-batches", type=int, default=1,
                   help="model calls at once, each on its own thread (default 1); on CPUs the fastest setting is "
                        "one per core with --runtime onnx-int8 --threads 1 (docs/support.md, Production settings)")
    add_serve_flags(p, default_port=8000)
    p.set_defaults(func=cmd_serve)
