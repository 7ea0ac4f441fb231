"""Traps an operator falls into: a per-replica admin token, a second worker on
the embedded database, default secrets and open ports in compose, commits that
are not on disk when the 202 goes out, an aborted upload logged as a crash, and
nothing pinned.

Each is checked where it shows: the process's exit and its one line of stderr,
the compose file as compose reads it, SQLite's own pragma, the server's
metrics and log, the files that pin the build.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from store import Store

REPO = Path(__file__).resolve().parents[2]


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMLREC_")}
    env.update(values)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smlrec.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_distributed_replicas_need_an_explicit_admin_token(tmp_path: Path) -> None:
    done = _run(["serve", "--no-worker", "--port", str(_free_port())],
                _env(SMLREC_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
                     SMLREC_REDIS_URL="redis://127.0.0.1:6379/15"))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "SMLREC_ADMIN_TOKEN must be set" in line
    assert not (tmp_path / "x.db").exists()


def test_a_worker_without_redis_does_not_lead_beside_the_embedded_one(tmp_path: Path) -> None:
    done = _run(["worker"], _env(SMLREC_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "SMLREC_REDIS_URL" in line


def test_compose_has_no_default_secret_and_publishes_on_loopback() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    text = (REPO / "docker-compose.yml").read_text()
    for name in ("SMLREC_ADMIN_TOKEN", "POSTGRES_PASSWORD"):
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), (name, uses)  # required
    assert "smlrec:smlrec@" not in text
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("${SMLREC_BIND_ADDRESS:-127.0.0.1}:"), port
    redis_command = compose["services"]["redis"]["command"]
    assert "--appendonly" in redis_command and "yes" in redis_command


def test_sqlite_commits_are_on_disk_before_they_are_acknowledged(sqlite_url: str) -> None:
    store = Store.from_url(sqlite_url)
    try:
        with store._engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        store.close()


def test_an_aborted_upload_is_a_client_error_without_a_traceback(
    sqlite_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = _env(SMLREC_DATABASE_URL=sqlite_url, SMLREC_MODEL_DIR=str(tmp_path / "m"),
               SMLREC_ADMIN_TOKEN="admin-secret", SMLREC_PORT=str(port))
    with open(log, "wb") as out:
        service = subprocess.Popen([sys.executable, "-m", "smlrec.cli", "serve", "--no-worker"],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and service.poll() is None, log.read_text()
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"POST /v1/interactions HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                        b'{"interactions": [{"user_id": "u1", ')
        route = 'route="/v1/interactions"'

        def counted() -> list[str]:
            return [line for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
                    if line.startswith("smlrec_http_requests_total") and route in line]

        deadline = time.monotonic() + 600
        while not counted():
            assert time.monotonic() < deadline, "the aborted request was never counted"
            time.sleep(0.1)
        assert all('status="400"' in line for line in counted()), counted()
        assert "Traceback" not in log.read_text()
    finally:
        service.terminate()
        service.wait(timeout=30)


def test_the_build_is_pinned() -> None:
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[a-z0-9.\-]+==[\w.]+", p) for p in pins), pins
    names = {p.split("==")[0] for p in pins}
    assert {"fastapi", "torch", "sqlalchemy", "redis", "uvicorn"} <= names
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[\[<>=~!; ]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in project["dependencies"]}
    assert required <= names, required - names  # every runtime dependency is pinned
    dockerfile = (REPO / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", base), base
    assert "requirements.lock" in dockerfile


@pytest.mark.parametrize("variable", ["SMLREC_PORT", "SMLREC_EMBED_DIM"])
def test_a_bad_setting_names_its_variable(variable: str, tmp_path: Path) -> None:
    done = _run(["serve"], _env(**{variable: "not-a-number"}))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert variable in line
