"""Real servers on loopback for the HTTP tests, and raw-socket clients for what httpx won't send."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, limits=None):
    """The app under uvicorn with the serving skeleton's protocol, in a thread; yields the base URL."""
    import uvicorn

    from core.serving.server import uvicorn_config
    from core.serving.app import ServiceLimits

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits or ServiceLimits()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def raw_exchange(base: str, payload: bytes, *, wait: float = 5.0, chunks: list[bytes] | None = None,
                 pause: float = 0.0) -> tuple[bytes, float]:
    """Send raw bytes (then `chunks`, `pause` s apart); return what came back until the server closed
    the connection or `wait` s passed, and the seconds that took."""
    host, port = base.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        try:
            sock.sendall(payload)
            for chunk in chunks or ():
                time.sleep(pause)
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except (socket.timeout, ConnectionResetError):
            pass
    return received, time.perf_counter() - start


def status_of(raw: bytes) -> int | None:
    if not raw.startswith(b"HTTP/1.1 "):
        return None
    return int(raw[9:12])


def start_cli_server(cli_args: list[str], port: int, env: dict, log_path, timeout: float = 180):
    """`python -m verticals.cli <cli_args> --port PORT` as a process (output to `log_path`), once its
    /readyz answers 200; RuntimeError with its log if it does not."""
    import subprocess
    import sys

    import httpx

    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "verticals.cli", *cli_args, "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server {cli_args} did not get ready:\n{open(log_path, errors='replace').read()[-5000:]}")
