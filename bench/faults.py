"""Fault drills: Redis stopped (kill -9) and restarted while clients ingest;
PostgreSQL stopped and restarted under a replica and a worker.

A private ``redis-server`` (AOF, ``appendfsync always``) on a free loopback port,
a SQLite database, one API replica (``smlrec serve --no-worker``). Clients post
batches with unique event ids:

1. Redis up: every batch 202;
2. Redis killed: every batch 503 with ``Retry-After`` (these batches are given
   up, so none of their rows may appear anywhere);
3. Redis restarted from its AOF: batches are retried on 503 until 202;
4. a ``smlrec worker`` drains the stream: the database must hold exactly the
   rows of the 202'd batches, each once.

PostgreSQL (``--postgres``; a private cluster made with initdb/pg_ctl under a
temporary folder, run as the ``postgres`` user when started as root, plus a
private Redis): a model is served, then PostgreSQL is stopped (``-m
immediate``): the replica keeps answering recommendations from memory and
accepting interactions into the stream; the worker cannot store them and keeps
retrying; after the restart it resumes, and the database holds every accepted
interaction once.

    python -m bench.faults
    python -m bench.faults --postgres
    python -m bench.faults --batches 5 --batch 50   # quick

The shared Redis and PostgreSQL servers are never touched. The worker-side
drills (the active worker killed mid-retrain, its standby taking over; entries
of a dead consumer stored once) are tests/worker's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text

from bench.harness import (
    ADMIN_TOKEN,
    Report,
    bench_main,
    free_port,
    serve,
    sqlite_env,
    start_worker,
    stop_process,
)

log = logging.getLogger("bench.faults")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="batches per phase")
    parser.add_argument("--batch", type=int, default=200, help="interactions per batch")
    parser.add_argument("--retry-timeout", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--postgres", action="store_true",
                        help="also the PostgreSQL drill (private cluster, ~1 minute)")
    parser.add_argument("--outage", type=float, default=10.0,
                        help="seconds PostgreSQL stays down")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


class PrivateRedis:
    """A redis-server of our own (never the shared one), durable by AOF."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.5) as client:
                    if client.ping():
                        return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: whatever was acknowledged must already be in the AOF."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Ledger:
    """What the clients were told, by event id."""

    accepted: set[str] = field(default_factory=set)  # in a 202'd batch
    abandoned: set[str] = field(default_factory=set)  # in a batch that only got 503s
    statuses: dict[str, list[int]] = field(default_factory=dict)  # phase -> status codes
    missing_retry_after: int = 0


def _batch(tag: str, size: int) -> tuple[list[str], bytes]:
    ids = [f"{tag}-{uuid.uuid4().hex[:12]}-{n}" for n in range(size)]
    rows = [{"user_id": f"u{n % 97}", "item_id": f"i{n % 89}", "timestamp": 1.7e9 + n,
             "event_id": e} for n, e in enumerate(ids)]
    return ids, json.dumps({"interactions": rows}).encode()


def _post(http: httpx.Client, body: bytes, ledger: Ledger, phase: str) -> int:
    response = http.post("/v1/interactions", content=body)
    ledger.statuses.setdefault(phase, []).append(response.status_code)
    if response.status_code == 503 and "retry-after" not in response.headers:
        ledger.missing_retry_after += 1
    return response.status_code


def redis_drill(args: argparse.Namespace, report: Report) -> None:
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="smlrec-faults-") as folder_name:
        folder = Path(folder_name)
        (folder / "redis").mkdir()
        env = sqlite_env(folder)
        with private_redis(folder / "redis") as redis_server:
            env["SMLREC_REDIS_URL"] = redis_server.url
            with serve(env, no_worker=True) as api, \
                    httpx.Client(base_url=api.url, timeout=30.0,
                                 headers={"Content-Type": "application/json"}) as http:
                for _ in range(args.batches):  # 1. up
                    ids, body = _batch("up", args.batch)
                    if _post(http, body, ledger, "up") == 202:
                        ledger.accepted.update(ids)
                redis_server.kill()  # 2. down
                for _ in range(args.batches):
                    ids, body = _batch("down", args.batch)
                    if _post(http, body, ledger, "down") == 202:
                        ledger.accepted.update(ids)
                    else:
                        ledger.abandoned.update(ids)
                redis_server.start()  # 3. back, same port, same AOF
                for _ in range(args.batches):
                    ids, body = _batch("back", args.batch)
                    deadline = time.monotonic() + args.retry_timeout
                    while _post(http, body, ledger, "back") != 202:
                        if time.monotonic() > deadline:
                            ledger.abandoned.update(ids)
                            break
                        time.sleep(0.2)
                    else:
                        ledger.accepted.update(ids)
            stored = _drain(env, len(ledger.accepted), args.drain_timeout)
    _report(report, ledger, stored)


def _drain(env: dict[str, str], expected: int, timeout: float) -> list[str]:
    """Run one worker until the database holds ``expected`` rows (or time is up);
    the event ids stored."""
    engine = create_engine(env["SMLREC_DATABASE_URL"])
    worker = start_worker(env)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.poll() is None:
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM interactions")).scalar_one() >= \
                        expected:
                    break
            time.sleep(0.1)
        time.sleep(1.0)  # anything beyond the expected rows would be a double
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT event_id FROM interactions")).scalars())
    finally:
        stop_process(worker)
        engine.dispose()


def _report(report: Report, ledger: Ledger, stored: list[str]) -> None:
    up, down, back = (ledger.statuses.get(p, []) for p in ("up", "down", "back"))
    report.add("Redis up: batches answered 202", "all", f"{up.count(202)} of {len(up)}",
               up.count(202) == len(up))
    report.add("Redis killed: batches answered 503 with Retry-After", "all",
               f"{down.count(503)} of {len(down)} 503, {ledger.missing_retry_after} without "
               "Retry-After", down.count(503) == len(down) and not ledger.missing_retry_after)
    first_ok = back.index(202) if 202 in back else -1
    report.add("Redis restarted: retried batches answered 202", "all",
               f"{back.count(202)} batches 202 ({first_ok} 503s first while reconnecting)",
               first_ok >= 0 and not any(s not in (202, 503) for s in back))
    counted = len(stored)
    distinct = set(stored)
    report.add("202'd interactions in the database after the drain", "all, each once",
               f"{len(distinct & ledger.accepted):,} of {len(ledger.accepted):,}; "
               f"{counted - len(distinct)} doubled; "
               f"{len(distinct & ledger.abandoned)} from 503'd batches",
               distinct >= ledger.accepted and counted == len(distinct)
               and not distinct & ledger.abandoned and len(distinct) == len(ledger.accepted))


class PrivatePostgres:
    """A PostgreSQL cluster of our own under ``folder`` (never the shared one)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.bin = _postgres_bin()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  "postgres", "--no-sync")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.folder / "log"), "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "stop")


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("no initdb under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def postgres_drill(args: argparse.Namespace, report: Report) -> None:
    from bench.harness import populate, write_model  # the store-side helpers
    from store import Store
    from store.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="smlrec-faults-pg-") as folder_name:
        folder = Path(folder_name)
        os.chmod(folder, 0o755)
        (folder / "redis").mkdir()
        pg = PrivatePostgres(folder / "pg")
        pg.init()
        pg.start()
        try:
            with private_redis(folder / "redis") as redis_server:
                _postgres_outage(args, report, pg, redis_server, folder, populate,
                                 write_model, Store, upgrade)
        finally:
            with suppress_errors():
                pg.stop()


@contextmanager
def suppress_errors() -> Iterator[None]:
    try:
        yield
    except (subprocess.SubprocessError, OSError) as error:
        log.warning("cleanup: %s", error)


def _postgres_outage(args: argparse.Namespace, report: Report, pg: PrivatePostgres,
                     redis_server: PrivateRedis, folder: Path, populate: Any,
                     write_model: Any, store_cls: Any, upgrade: Any) -> None:
    upgrade(pg.url)
    model_dir = folder / "models"
    store = store_cls.from_url(pg.url)
    try:
        populate(store, 50, 40)
        write_model(store, model_dir, 8, seed=0)
    finally:
        store.close()
    env = {"SMLREC_DATABASE_URL": pg.url, "SMLREC_REDIS_URL": redis_server.url,
           "SMLREC_MODEL_DIR": str(model_dir), "SMLREC_PERIOD": "manual"}
    ledger = Ledger()
    worker = subprocess.Popen(
        [sys.executable, "-m", "smlrec.cli", "worker"],
        env={**os.environ, **env, "SMLREC_ADMIN_TOKEN": ADMIN_TOKEN,
             "SMLREC_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reco_ok = reco_total = 0
    try:
        with serve(env, no_worker=True) as api, \
                httpx.Client(base_url=api.url, timeout=30.0,
                             headers={"Content-Type": "application/json"}) as http:
            for phase in ("before", "outage"):
                if phase == "outage":
                    pg.stop()
                    outage_started = time.monotonic()
                deadline = time.monotonic() + (args.outage if phase == "outage" else 2.0)
                while time.monotonic() < deadline:
                    ids, body = _batch(phase, args.batch)
                    status = _post(http, body, ledger, phase)
                    (ledger.accepted if status == 202 else ledger.abandoned).update(ids)
                    response = http.get(f"/v1/users/u{reco_total % 50}/recommendations?k=5")
                    if phase == "outage":
                        reco_total += 1
                        body_ok = response.status_code == 200 and \
                            response.json()["model_version"] == 1 and \
                            response.json()["fallback"] is None
                        reco_ok += int(body_ok)
                    time.sleep(0.05)
            ready_down = http.get("/readyz").status_code
            pg.start()
            down_for = time.monotonic() - outage_started
            engine = create_engine(pg.url.replace("postgresql://", "postgresql+psycopg://"))
            started = time.monotonic()
            stored: list[str] = []
            while time.monotonic() - started < args.drain_timeout:
                try:
                    with engine.connect() as conn:
                        stored = list(conn.execute(
                            text("SELECT event_id FROM interactions "
                                 "WHERE event_id IS NOT NULL")).scalars())
                except Exception:  # the server is still coming up
                    stored = []
                if len(set(stored) & ledger.accepted) >= len(ledger.accepted):
                    break
                time.sleep(0.2)
            resumed_after = time.monotonic() - started
            ready_up = http.get("/readyz").status_code
            engine.dispose()
    finally:
        stop_process(worker)
    distinct = set(stored)
    before_statuses = ledger.statuses.get("before", [])
    report.add("PostgreSQL up: batches answered 202", "all",
               f"{before_statuses.count(202)} of {len(before_statuses)}",
               before_statuses.count(202) == len(before_statuses))
    outage_statuses = ledger.statuses.get("outage", [])
    report.add(f"PostgreSQL down {down_for:.0f} s: recommendations served from memory",
               "all 200 from the model", f"{reco_ok} of {reco_total}",
               reco_total > 0 and reco_ok == reco_total)
    report.add("PostgreSQL down: interactions accepted into the stream", "202",
               f"{outage_statuses.count(202)} of {len(outage_statuses)} batches 202; "
               f"/readyz {ready_down} while down, {ready_up} after",
               outage_statuses.count(202) == len(outage_statuses) and ready_down == 503)
    report.add("PostgreSQL restarted: the worker resumes, every 202'd row stored once",
               "all, each once", f"{len(distinct & ledger.accepted):,} of "
               f"{len(ledger.accepted):,} after {resumed_after:.1f} s; "
               f"{len(stored) - len(distinct)} doubled",
               distinct >= ledger.accepted and len(stored) == len(distinct))


def run(args: argparse.Namespace) -> Report:
    report = Report("Faults (distributed mode)")
    redis_drill(args, report)
    if args.postgres:
        postgres_drill(args, report)
    report.notes.append("kill -9 of the active worker mid-retrain and the standby's takeover: "
                        "tests/worker (test_worker_durability, test_worker_loop)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, fail_on_miss=True)


if __name__ == "__main__":
    raise SystemExit(main())
