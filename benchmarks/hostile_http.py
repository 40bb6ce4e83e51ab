"""Question: does either HTTP service answer any hostile request with a 5xx, hang, or change?

Protocol: start `verticals serve RUN` (support router, bearer token set) and `verticals recsys
serve INDEX` (same token) as real processes on loopback; send each class of hostile request
from the hardening issue many times (lone surrogates as JSON escapes and as raw bytes, invisible
text, NaN/Infinity/1e400, huge integers, deep nesting, random bytes, a body without content type,
chunked bodies far over the limit, random 404 paths, a trailing slash with a forged Host, slow and
partial requests, oversized headers, unauthenticated calls to every route); record the status of
every answer per class, the 5xx count, each server's RSS before and after, and whether a fixed
reference query answers exactly as before. Writes benchmarks/results/hostile_http.json and .md.

  python -m benchmarks.hostile_http --run runs/demo --index runs/shop-index
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from benchmarks.record import write_record
from tests.http_helpers import free_port, raw_exchange, start_cli_server, status_of

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json", **AUTH}


def start(args: list[str], port: int):
    env = {**os.environ, "VERTICALS_API_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    return start_cli_server(args, port, env, Path(tempfile.gettempdir()) / f"hostile-{port}.log")


def body_classes(text_field: str, path: str, rng: random.Random) -> dict[str, list[tuple[str, str, bytes, dict]]]:
    """Request classes sent through httpx: name -> [(method, path, body, headers)]."""
    def post(body: bytes, headers=JSON):
        return ("POST", path, body, headers)

    def obj(value: bytes) -> bytes:
        return b'{"' + text_field.encode() + b'": ' + value + b"}"

    return {
        "lone surrogate (JSON escape)": [post(obj(b'"\\ud800 ' + str(i).encode() + b'"')) for i in range(200)],
        "lone surrogate (raw bytes ED A0 80)": [post(obj(b'"a\xed\xa0\x80' + str(i).encode() + b'"')) for i in range(200)],
        "invisible-only text": [post(obj(json.dumps(rng.choice(["\u200b", "\ufeff", "\u00ad", "\u2060"]) * (1 + i % 5)).encode()))
                                for i in range(200)],
        "NaN / Infinity / 1e400": [post(obj(v)) for v in (b"NaN", b"Infinity", b"-Infinity", b"1e400") for _ in range(50)],
        "integer of 5,000 digits": [post(obj(b"9" * 5000)) for _ in range(100)],
        "nesting 100,000 deep": [post(b"[" * 100_000) for _ in range(50)],
        "random bytes": [post(rng.randbytes(rng.randint(1, 2000))) for _ in range(300)],
        "no content type (curl -d)": [("POST", path, obj(b'"hello"'), {"content-type": "application/x-www-form-urlencoded", **AUTH})
                                      for _ in range(100)],
        "20 MB body": [post(b'{"' + text_field.encode() + b'": "' + b"a" * 20_000_000 + b'"}') for _ in range(3)],
        "random 404 paths": [("GET", f"/{rng.randbytes(8).hex()}/{i}", b"", AUTH) for i in range(5000)],
        "no token, every route": [(m, p, b"{}", {"content-type": "application/json"})
                                  for m, p in (("POST", path), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/metrics"))
                                  for _ in range(50)],
    }


def raw_classes(path: str) -> dict[str, list[tuple[bytes, list[bytes], float]]]:
    """Classes sent on raw sockets: name -> [(head, later chunks, pause between chunks)]."""
    chunked = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode()
    return {
        "chunked 100 MB body": [(chunked, [b"100000\r\n" + b"a" * 0x100000 + b"\r\n"] * 100, 0.0) for _ in range(2)],
        "huge chunk-size line": [(chunked + b"f" * 100_000 + b"\r\n", [], 0.0) for _ in range(5)],
        "trailing slash, forged Host": [(f"POST {path}/ HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {TOKEN}\r\n"
                                         "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                                         .encode(), [], 0.0) for _ in range(20)],
        "header of 100 KB": [(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 100_000 + b"\r\n\r\n", [], 0.0)
                             for _ in range(20)],
        "partial headers, then silence": [(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n", [], 0.0) for _ in range(5)],
    }


def held_connections(port: int, n: int, wait: float) -> dict:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    time.sleep(wait)
    closed = 0
    for s in socks:
        s.settimeout(1)
        try:
            closed += s.recv(10) == b""
        except ConnectionResetError:
            closed += 1
        except socket.timeout:  # still open
            pass
        s.close()
    return {"held": n, "closed_by_server": closed}


def attack(name: str, port: int, text_field: str, path: str, reference: tuple[str, dict], seed: int) -> dict:
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(seed)
    proc = psutil.Process(_pid_on(port))
    with httpx.Client(base_url=base, timeout=60) as client:
        before = client.post(reference[0], json=reference[1], headers=AUTH).json()
        rss_before = proc.memory_info().rss / 2**20  # after the first model call: its buffers are not a leak
        classes = {}
        for label, requests in body_classes(text_field, path, rng).items():
            statuses = Counter()
            for method, p, body, headers in requests:
                try:
                    statuses[client.request(method, p, content=body or None, headers=headers).status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[f"closed ({type(exc).__name__})"] += 1
            classes[label] = dict(statuses)
        for label, requests in raw_classes(path).items():
            statuses, seconds = Counter(), []
            for head, chunks, pause in requests:
                raw, took = raw_exchange(base, head, wait=60, chunks=chunks, pause=pause)
                statuses[status_of(raw) or "closed"] += 1
                seconds.append(took)
            classes[label] = {**dict(statuses), "max_seconds": round(max(seconds), 2)}
        classes["400 held idle connections"] = held_connections(port, 400, 32)
        after = client.post(reference[0], json=reference[1], headers=AUTH).json()
        healthy = client.get("/healthz").status_code == 200
    sent = sum(sum(v for k, v in c.items() if k not in ("max_seconds", "held", "closed_by_server")) or c.get("held", 0)
               for c in classes.values())
    fivexx = sum(v for c in classes.values() for k, v in c.items() if isinstance(k, int) and k >= 500)
    return {"service": name, "requests_sent": sent, "responses_5xx": fivexx, "classes": classes,
            "healthy_after": healthy, "reference_unchanged": before == after,
            "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(proc.memory_info().rss / 2**20, 1)}


def _pid_on(port: int) -> int:
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    raise SystemExit(f"no process listens on {port}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a support run directory (e.g. from `verticals demo`)")
    parser.add_argument("--index", required=True, help="a recsys index directory (from `verticals recsys index`)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = []
    for name, cli, field, path, reference in (
            ("support router", ["serve", args.run], "text", "/v1/route", ("/v1/route", {"text": "my card was declined"})),
            ("recsys", ["recsys", "serve", args.index], "text", "/v1/items", ("/v1/similar", {"text": "camping light", "k": 5}))):
        port = free_port()
        proc = start(cli, port)
        try:
            records.append(attack(name, port, field, path, reference, args.seed))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(json.dumps({k: v for k, v in records[-1].items() if k != "classes"}), flush=True)
    lines = ["| service | hostile requests sent | 5xx | healthy after | reference answer unchanged | RSS MB before → after |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['service']} | {r['requests_sent']:,} | {r['responses_5xx']} | {r['healthy_after']} | "
              f"{r['reference_unchanged']} | {r['rss_mb_before']} → {r['rss_mb_after']} |" for r in records]
    load = os.getloadavg()
    lines.append(f"\n{len(records[0]['classes'])} request classes per service, seed {args.seed}; load average at the end "
                 f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} on {os.cpu_count()} CPUs; statuses per class in the JSON record.")
    table = "\n".join(lines) + "\n"
    write_record("hostile_http", {"question": "hostile requests vs 5xx, per service", "protocol": __doc__,
                                  "config": {"run": args.run, "index": args.index, "seed": args.seed},
                                  "load_average_end": load, "services": records}, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
