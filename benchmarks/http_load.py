"""The load generator of the service benchmarks: concurrent keep-alive clients against a server on
loopback, with the CPU of the server (and its worker processes) and of the generator measured.

Hand-written on purpose: the generator shares the machine's cores with the server, and httpx's
AsyncClient spends ~0.5 of a core at a few hundred requests/s (measured), which the server then
lacks. One asyncio connection per client writes the request bytes itself and reads the answer by
its Content-Length: ~0.03 of a core, and it still checks every status line and body.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import psutil


async def _client(port: int, path: str, bodies: list[bytes], counter, expect: bytes, latencies: list,
                  errors: list) -> None:
    """One keep-alive HTTP/1.1 connection sending POST `path` until `counter` runs out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    try:
        for i in counter:
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not status.startswith(b"HTTP/1.1 200") or expect not in payload:
                errors.append(status.decode(errors="replace").strip())
    finally:
        writer.close()


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def _cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children (uvicorn's worker processes)."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def load_test(port: int, server_pid: int, texts: list[str], *, requests: int, concurrency: int,
              path: str = "/v1/route", field: str = "text", expect: bytes = b'"intent"') -> dict:
    """Send `requests` POSTs of {field: text} from `concurrency` keep-alive clients; requests/s,
    errors (non-200 or a body without `expect`), latency percentiles, CPU cores of server and generator."""
    bodies = [json.dumps({field: t}).encode() for t in texts]

    async def run():
        counter, latencies, errors = iter(range(requests)), [], []
        await asyncio.gather(*(_client(port, path, bodies, counter, expect, latencies, errors)
                               for _ in range(concurrency)))
        return latencies, errors

    server, client = psutil.Process(server_pid), psutil.Process()
    cpu0 = (_cpu_seconds(server), sum(client.cpu_times()[:2]))
    start = time.perf_counter()
    latencies, errors = asyncio.run(run())
    wall = time.perf_counter() - start
    cpu1 = (_cpu_seconds(server), sum(client.cpu_times()[:2]))
    return {"requests": requests, "concurrency": concurrency, "requests_per_second": requests / wall,
            "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "server_cpu_cores": (cpu1[0] - cpu0[0]) / wall, "client_cpu_cores": (cpu1[1] - cpu0[1]) / wall,
            **percentiles(latencies)}
