"""Helpers of the worker's tests (the fixtures are in conftest.py): small drifting
data, settings, throw-away PostgreSQL databases, ``smlrec`` subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from sml.data import InteractionLog
from sml.synthetic import SyntheticConfig
from smlrec.settings import Settings
from store import NewInteraction, RedisBus
from store.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "SMLREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


REDIS_URL = os.environ.get("SMLREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


REPO = Path(__file__).resolve().parents[2]


SMALL = SyntheticConfig(
    n_periods=4,
    interactions_per_period=300,
    n_users_initial=40,
    n_items_initial=150,
    new_users_per_period=10,
    new_items_per_period=10,
    seed=7,
)


def rows_of(log: InteractionLog, start: int, stop: int, tag: str = "e") -> list[NewInteraction]:
    return [
        NewInteraction(
            log.user_ids[int(log.users[r])],
            log.item_ids[int(log.items[r])],
            float(log.timestamps[r]),
            f"{tag}{r}",
        )
        for r in range(start, stop)
    ]


def bodies_of(log: InteractionLog, start: int, stop: int, tag: str = "e") -> list[dict[str, Any]]:
    return [
        {"user_id": r.user_id, "item_id": r.item_id, "timestamp": r.ts, "event_id": r.event_id}
        for r in rows_of(log, start, stop, tag)
    ]


def wait_for(predicate: Callable[[], Any], timeout: float = 600.0, every: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(every)


def make_settings(database_url: str, model_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": None,
        "model_dir": model_dir,
        "period": "manual",
        "embed_dim": 8,
        "worker_poll_seconds": 0.05,
        "swap_poll_seconds": 0.5,
        # the production lease: a worker process niced below a loaded machine can miss a
        # 2 s lease and give its job up; tests about a lapsing lease set a short one
        "lock_ttl_seconds": 10.0,
        "admin_token": "admin-secret",
        "api_key": None,
        "log_level": "INFO",
        "retrain_attempts": 1,  # a failed retrain fails its job at once unless a test retries
    }
    values.update(overrides)
    return Settings(**values)


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresDatabases:
    """Fresh, migrated databases on the test server, all dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)

    def create(self) -> str:
        name = f"smlrec_worker_test_{uuid.uuid4().hex[:12]}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        url = make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        return url

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self._admin(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self.created.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """``smlrec`` subprocesses of one test, always killed at its end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SMLREC_")}
        full_env.update(env)
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the process)
        process = subprocess.Popen(
            [sys.executable, "-m", "smlrec.cli", *args],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def kill_all(self) -> None:
        for name in list(self.running):
            self.kill(name)


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server at {base_url} exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server at {base_url} not healthy within {timeout} s")


def seen_csr_ok(payload: dict[str, Any]) -> bool:
    indptr = payload["seen_indptr"].numpy()
    return bool(
        len(indptr) == payload["user"].shape[0] + 1
        and indptr[-1] == len(payload["seen_items"])
        and np.all(np.diff(indptr) >= 0)
    )


CLAIM_KEY = "smlrec-worker-tests:claim"


CLAIMABLE_DBS = range(1, 13)  # 13 is the service tests'; 0 is shared


@dataclass(frozen=True)
class ProcessRedis:
    """Where ``smlrec`` subprocesses of one test meet in Redis."""

    url: str
    prefix: str

    def bus(self) -> RedisBus:
        return RedisBus(self.url, prefix=self.prefix)


def distributed_env(
    database_url: str, redis_at: ProcessRedis, model_dir: Path, **extra: str
) -> dict[str, str]:
    env = {
        "SMLREC_DATABASE_URL": database_url,
        "SMLREC_REDIS_URL": redis_at.url,
        "SMLREC_MODEL_DIR": str(model_dir),
        "SMLREC_PERIOD": "manual",
        "SMLREC_EMBED_DIM": "8",
        "SMLREC_LOCK_TTL_SECONDS": "2",
        "SMLREC_WORKER_POLL_SECONDS": "0.1",
        "SMLREC_SWAP_POLL_SECONDS": "0.5",
        "SMLREC_ADMIN_TOKEN": "admin-secret",
        "SMLREC_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env
