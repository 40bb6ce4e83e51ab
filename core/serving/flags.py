"""The command-line flags every serving command shares: where to listen, and what to open without the token.

`add_serve_flags(parser, default_port=...)` adds `--host`, `--port` and `--public`;
`serve_flags(args)` reads them back as one `ServeFlags` (`--public` falling back to the env
`VERTICALS_PUBLIC`), with the address to print. The standard library only: the console entry
imports the commands that call this at start-up, before any web framework is loaded.
Leaves out: the bearer token (env `VERTICALS_API_TOKEN`, read by core.serving.app.Access) and
what the public groups mean (core.serving.app.OPTIONAL_PUBLIC).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

PUBLIC_ENV = "VERTICALS_PUBLIC"


@dataclass(frozen=True)
class ServeFlags:
    host: str
    port: int
    public: str | None  # comma-separated public groups (docs, metrics), or None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def add_serve_flags(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=default_port, help="port to listen on (default: %(default)s)")
    parser.add_argument("--public", default=None,
                        help="with a bearer token set (env VERTICALS_API_TOKEN), also open these without the token: "
                             f"docs, metrics (comma-separated; default: env {PUBLIC_ENV}, else none)")


def serve_flags(args: argparse.Namespace) -> ServeFlags:
    """The flags `add_serve_flags` added, `--public` falling back to the env VERTICALS_PUBLIC."""
    public = args.public if args.public is not None else os.environ.get(PUBLIC_ENV)
    return ServeFlags(args.host, args.port, public)
