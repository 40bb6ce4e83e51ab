"""Real redis-server and PostgreSQL servers for the scale-out tests, each in a temp dir on a free port.

`RedisServer` runs Debian's redis-server with an append-only file fsynced on every write, so a
restart keeps the stream and the consumer group. `PostgresServer` runs initdb + pg_ctl (as the
`postgres` user through runuser when we are root: PostgreSQL refuses to run as root), listening
only on a Unix socket in its temp dir; `stop()` then `start()` again is an outage the data
survives (same socket, same port). The tests skip (pytest.skip with `missing()`'s reason) when
the binaries are missing. Used by the finance monitor's scale-out tests, the support service's
replica tests, the prediction log's tests and benchmarks/finance_scaleout.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self):
        self.binary = shutil.which("redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="verticals-redis-"))
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                      "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                      "--protected-mode", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: self.client().ping())
        return self

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis-server flushes the AOF and exits
            self.proc.wait(timeout=20)

    def restart(self, down_seconds: float = 0.5) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wait(self, probe, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                probe()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)


class PostgresServer:
    def __init__(self, fsync: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="verticals-pg-"))
        self.port, self.fsync = free_port(), fsync
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @staticmethod
    def missing() -> str | None:
        """Why this machine cannot run the server, or None."""
        if not (PG_BIN / "initdb").is_file():
            return f"PostgreSQL 15 not installed ({PG_BIN}/initdb missing; apt-get install postgresql-15)"
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run the server as"
            if not shutil.which("runuser"):
                return "running as root and runuser is missing"
        return None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.dir}&port={self.port}"

    def start(self) -> "PostgresServer":
        """initdb (the first time), then start the server and wait until it accepts connections."""
        data = self.dir / "data"
        if not data.exists():
            if self.as_user:
                shutil.chown(self.dir, "postgres", "postgres")
            self._run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                       "--no-locale"])
        options = f"-p {self.port} -k {self.dir} -c listen_addresses='' -c max_connections=50"
        if not self.fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"])
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected); `start()` brings it back."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"])

    def schema_dsn(self, name: str) -> str:
        """A URL whose tables live in a new, empty schema `name` (search_path): a fresh database for
        one test, without the cost of CREATE DATABASE."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.dsn()}&options=-csearch_path%3D{name}"

    def close(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(self.as_user + cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
