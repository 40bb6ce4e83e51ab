"""`verticals support route` and `verticals serve`. Only argparse at import time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.errors import UserError


def _settings(args):
    from solutions.support.router import RouterSettings

    return RouterSettings(min_confidence=args.min_confidence, min_margin=args.min_margin,
                          use_out_of_scope=not args.no_out_of_scope, top_k=args.top_k)


def _texts(args) -> list[str]:
    from core.text import texts_from_args, texts_from_jsonl

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
    from core.quiet import quiet_libraries

    quiet_libraries()
    from solutions.support.router import IntentRouter

    router = IntentRouter.from_run(Path(args.run_dir), args.routes and Path(args.routes), _settings(args), args.runtime, args.threads)
    for start in range(0, len(texts), 256):
        for row in router.route_batch(texts[start:start + 256]):
            print(json.dumps(row))
    return 0


def cmd_serve(args) -> int:
    from core.quiet import quiet_libraries

    quiet_libraries()
    from core.server import serve
    from core.serving import Access
    from solutions.support.router import IntentRouter
    from solutions.support.service import create_app

    access = Access.from_env(args.public)
    router = IntentRouter.from_run(Path(args.run_dir), args.routes and Path(args.routes), _settings(args), args.runtime, args.threads)
    app = create_app(router.route_batch, info=router.describe(), access=access)
    opened = f"; public without the token: health, readiness{''.join(', ' + p for p in sorted(access.public))}"
    print(f"serving {args.run_dir} on http://{args.host}:{args.port} (docs: /docs)"
          f"{' with bearer-token auth' + opened if access.token else ' without auth (set VERTICALS_API_TOKEN)'}",
          flush=True)
    serve(app, args.host, args.port)
    return 0


def _router_args(p) -> None:
    p.add_argument("run_dir", help="a run directory from `verticals train support/...`")
    p.add_argument("--routes", help="routing table YAML: routes: {intent: {queue, priority, reply}}")
    p.add_argument("--min-confidence", type=float, default=0.5, help="hand over below this calibrated confidence")
    p.add_argument("--min-margin", type=float, default=0.1, help="hand over when top-2 are closer than this")
    p.add_argument("--no-out-of-scope", action="store_true", help="do not hand over out-of-scope queries")
    p.add_argument("--top-k", type=int, default=3)
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

    p = sub.add_parser("serve", help="HTTP intent-routing service (POST /v1/route, /healthz, /readyz, /metrics, /docs)")
    _router_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--public", default=None,
                   help="with VERTICALS_API_TOKEN set, also open these without the token: docs, metrics "
                        "(comma-separated; default: env VERTICALS_PUBLIC, else none)")
    p.set_defaults(func=cmd_serve)
