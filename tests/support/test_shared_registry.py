"""A model registry several hosts share: its state in a real PostgreSQL, its runs in one directory.

The registry itself (core.mlops.registry_postgres.PostgresRegistry): the file registry's lifecycle
(register, promote, rollback, the champion stack), two openers of the same directory (two hosts)
seeing each other's changes, concurrent writers all landing, and the doors between the two backends.
Then two `verticals serve --registry DIR --registry-state URL` replicas under load: a promote and a
rollback from the command line reach both within their reload interval, with no failed request and
every response naming its model version. Skips, saying why, without PostgreSQL 15 or psycopg.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import httpx
import pytest

from core.foundation.errors import UserError
from core.mlops.registries import STATE_ENV, is_registry, open_registry
from core.mlops.registry import REGISTRY_FILE, STATE_MARKER, ModelRegistry
from core.mlops.registry_postgres import PostgresRegistry
from tests.http_helpers import free_port, start_cli_server
from verticals.cli import main


@pytest.fixture
def dsn(postgres, request):
    return postgres.schema_dsn(f"reg_{request.node.name[5:40].lower()}")


def test_the_registry_lifecycle_with_its_state_in_postgresql(served_run, dsn, tmp_path):
    reg = open_registry(tmp_path / "reg", dsn)
    assert type(reg).__name__ == "PostgresRegistry" and is_registry(tmp_path / "reg")
    assert not (tmp_path / "reg" / REGISTRY_FILE).exists() and dsn not in (tmp_path / "reg" / STATE_MARKER).read_text()
    assert reg.champion() is None and reg.versions() == []
    first = reg.register(served_run, status="champion", by="ci")
    token = reg.state_token()
    second = reg.register(served_run, parent=first, by="ci")
    assert (first, second) == ("v0001", "v0002") and reg.state_token() == token  # a candidate changes no champion
    assert (reg.version_path(second) / "model").is_dir() and reg.find(reg.version_path(second)) == second
    other_host = open_registry(tmp_path / "reg", dsn)  # another host: the same directory and database
    other_host.promote(second, by="ops", reason="better")
    assert reg.champion() == second and reg.state_token() != token
    assert [v["status"] for v in reg.versions()] == ["retired", "champion"]
    assert other_host.rollback(by="ops") == first and reg.champion() == first
    assert [e["event"] for e in reg.events()] == ["register", "promote", "register", "promote", "rollback"]
    with pytest.raises(UserError, match="nothing to roll back"):
        reg.rollback(by="ops")


def test_concurrent_writers_on_two_hosts_all_land(served_run, dsn, tmp_path):
    hosts = [open_registry(tmp_path / "reg", dsn) for _ in range(2)]
    hosts[0].register(served_run, status="champion", by="ci")
    errors: list = []

    def register(host):
        try:
            for _ in range(2):
                host.register(served_run, parent="v0001", by="ci")
        except Exception as exc:  # a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = [v["version"] for v in hosts[1].versions()]
    assert versions == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    assert all((hosts[0].version_path(v) / "model").is_dir() for v in versions)


def test_the_doors_between_file_and_database_registries(served_run, dsn, tmp_path, monkeypatch):
    monkeypatch.delenv(STATE_ENV, raising=False)
    open_registry(tmp_path / "db", dsn).register(served_run, status="champion", by="ci")
    with pytest.raises(UserError, match="keeps its state in PostgreSQL"):
        open_registry(tmp_path / "db")  # no URL: refused, not a second (file) state
    monkeypatch.setenv(STATE_ENV, dsn)
    assert open_registry(tmp_path / "db").champion() == "v0001"  # the URL from the environment
    file_registry = ModelRegistry(tmp_path / "file")
    file_registry.register(served_run, status="champion", by="ci")
    assert type(open_registry(tmp_path / "file")).__name__ == "ModelRegistry"  # registry.json wins over the env
    with pytest.raises(UserError, match="is a file registry"):
        PostgresRegistry(tmp_path / "file", dsn)
    with pytest.raises(UserError, match="must be a postgresql:// URL"):
        open_registry(tmp_path / "new", "sqlite:///x.db")
    bad = dsn.replace("@/postgres?", "@/no_such_database?")
    with pytest.raises(UserError, match="cannot connect"):
        open_registry(tmp_path / "other", bad)


def test_a_promote_and_a_rollback_reach_every_replica_under_load(served_run, dsn, tmp_path, capsys):
    registry = tmp_path / "reg"
    reg = open_registry(registry, dsn)
    reg.register(served_run, status="champion", by="ci")
    reg.register(served_run, parent="v0001", by="ci")  # the same model as v0002: only its version differs
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ports = [free_port(), free_port()]
    procs = [start_cli_server(["serve", "--registry", str(registry), "--registry-state", dsn, "--reload-interval",
                               "0.3", "--no-log"], port, env, tmp_path / f"replica-{i}.log", timeout=120)
             for i, port in enumerate(ports)]
    seen: list[tuple[int, str]] = []
    failures: list = []
    stop = threading.Event()

    def load(i: int):
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[i]}", timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/route", json={"text": "my card was declined"})
                if response.status_code != 200:
                    failures.append((i, response.status_code, response.text[:200]))
                else:
                    seen.append((i, response.json()["model_version"]))

    def versions_now() -> set[str]:
        mark = len(seen)
        time.sleep(0.2)
        return {v for _, v in seen[mark:]}

    threads = [threading.Thread(target=load, args=(i,)) for i in (0, 1, 0, 1)]
    try:
        for t in threads:
            t.start()
        assert _until(lambda: versions_now() == {"v0001"})
        assert main(["registry", "promote", str(registry), "v0002", "--registry-state", dsn, "--by", "ops"]) == 0
        assert _until(lambda: versions_now() == {"v0002"} and {i for i, _ in seen[-40:]} == {0, 1})
        assert main(["registry", "rollback", str(registry), "--registry-state", dsn, "--by", "ops"]) == 0
        assert _until(lambda: versions_now() == {"v0001"} and {i for i, _ in seen[-40:]} == {0, 1})
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
    assert not failures and len(seen) > 50
    assert {v for _, v in seen} == {"v0001", "v0002"}
    capsys.readouterr()
    shutil.rmtree(registry / "runs", ignore_errors=True)


def _until(check, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
    return False
