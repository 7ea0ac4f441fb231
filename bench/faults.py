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
    python -m bench.faults --drills all --repeat 3  # the deployment drills below

Deployment drills (``--drills``; private PostgreSQL and Redis, one API replica,
``smlrec worker`` processes; each drill ``--repeat`` times, then an audit of
every acknowledged event id against the database and of the versions of every
closed period):

- kill-worker: the leading worker kill -9'd mid-retrain; a standby takes over;
- redis-restart: Redis kill -9'd and restarted from its AOF while clients post
  (and retry on 503);
- postgres-restart: PostgreSQL stopped (immediate) and started while clients post;
- disk-full: MODEL_DIR (a tmpfs of ``--disk-mb``) filled during a retrain, then
  freed: the retry succeeds once there is room.

The shared Redis and PostgreSQL servers are never touched. The worker-side
drills (the active worker killed mid-retrain, its standby taking over; entries
of a dead consumer stored once) are tests/worker's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
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
    parser.add_argument("--drills", help="drills on a whole deployment instead: 'all' or "
                        "some of kill-worker,redis-restart,postgres-restart,disk-full")
    parser.add_argument("--repeat", type=int, default=3, help="times each drill runs")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="interactions per second the clients post during the drills")
    parser.add_argument("--disk-mb", type=int, default=64, help="MODEL_DIR size (disk-full)")
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


def _batch(tag: str, size: int, users: int = 97, items: int = 89,
           rng: random.Random | None = None) -> tuple[list[str], bytes]:
    """A request body of ``size`` interactions with unique event ids; users and
    items cycle through small sets, or are drawn from ``users`` x ``items`` with
    ``rng``."""
    ids = [f"{tag}-{uuid.uuid4().hex[:12]}-{n}" for n in range(size)]
    pairs = ([(rng.randrange(users), rng.randrange(items)) for _ in ids] if rng is not None
             else [(n % users, n % items) for n in range(size)])
    rows = [{"user_id": f"u{u}", "item_id": f"i{i}", "timestamp": 1.7e9 + n, "event_id": e}
            for n, (e, (u, i)) in enumerate(zip(ids, pairs, strict=True))]
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


# ---- drills on a whole distributed deployment ------------------------------------

CLUSTER_ENV = {
    "SMLREC_PERIOD": "manual",
    "SMLREC_EMBED_DIM": "16",
    "SMLREC_LOCK_TTL_SECONDS": "2",
    "SMLREC_WORKER_POLL_SECONDS": "0.2",
    "SMLREC_RETRAIN_BACKOFF_SECONDS": "1",
    "SMLREC_RETRAIN_ATTEMPTS": "20",
    "SMLREC_LOG_LEVEL": "INFO",
}


class Cluster:
    """A private PostgreSQL and Redis (AOF, fsync always), one API replica and
    workers, all under ``folder``; nothing shared is touched."""

    def __init__(self, folder: Path, extra_env: dict[str, str] | None = None,
                 model_dir: Path | None = None) -> None:
        self.folder = folder
        os.chmod(folder, 0o755)
        (folder / "redis").mkdir()
        self.pg = PrivatePostgres(folder / "pg")
        self.redis = PrivateRedis(folder / "redis")
        self.model_dir = model_dir or folder / "models"
        self.env = {**CLUSTER_ENV, **(extra_env or {}),
                    "SMLREC_MODEL_DIR": str(self.model_dir)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.api_url = ""

    def __enter__(self) -> Cluster:
        from store.migrate import upgrade

        self.pg.init()
        self.pg.start()
        self.redis.start()
        self.env.update(SMLREC_DATABASE_URL=self.pg.url, SMLREC_REDIS_URL=self.redis.url)
        upgrade(self.pg.url)
        return self

    def __exit__(self, *_: object) -> None:
        for name in list(self.processes):
            self.stop(name, timeout=10)
        self.redis.kill()
        with suppress_errors():
            self.pg.stop()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log_file = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 (the process's)
        process = subprocess.Popen(
            [sys.executable, "-m", "smlrec.cli", *args],
            env={**os.environ, **self.env, "SMLREC_ADMIN_TOKEN": ADMIN_TOKEN},
            stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        self.processes[name] = process
        return process

    def start_api(self) -> str:
        port = free_port()
        process = self._start("api", ["serve", "--no-worker", "--host", "127.0.0.1",
                                      "--port", str(port)])
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.api_url + "/healthz", timeout=1).status_code == 200:
                    return self.api_url
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {self.log('api')[-2000:]}")
            time.sleep(0.2)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        return self._start(name, ["worker"])

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def leader(self) -> str | None:
        """The worker that logged taking the lead last and is still running."""
        best: tuple[int, str] | None = None
        for name, process in self.processes.items():
            if name.startswith("worker") and process.poll() is None:
                at = self.log(name).rfind("this worker is the leader")
                if at >= 0 and (best is None or at > best[0]):
                    best = (at, name)
        return best[1] if best else None

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=30)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_process(process, timeout)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.pg.url, connect_timeout=5) as conn:
            return list(conn.execute(sql).fetchall())


@dataclass
class Poster:
    """Posts batches with unique event ids at a steady pace on a thread,
    retrying each batch on 503 until it is acknowledged; records what was."""

    url: str
    batch: int
    per_second: float
    users: int = 97
    items: int = 89
    seed: int | None = None  # draw users and items at random (else cycle through them)
    accepted: set[str] = field(default_factory=set)
    posted: int = 0
    errors: int = 0
    _stop: Any = None
    _thread: Any = None
    _rng: random.Random | None = None

    def start(self) -> None:
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def post_one(self, http: httpx.Client, tag: str) -> None:
        if self.seed is not None and self._rng is None:
            self._rng = random.Random(self.seed)
        ids, body = _batch(tag, self.batch, self.users, self.items, self._rng)
        while not self._stop.is_set() if self._stop is not None else True:
            try:
                response = http.post("/v1/interactions", content=body)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 202:
                self.accepted.update(ids)
                self.posted += 1
                return
            self.errors += 1
            time.sleep(0.2)

    def _run(self) -> None:
        interval = self.batch / self.per_second
        with httpx.Client(base_url=self.url, timeout=30.0,
                          headers={"Content-Type": "application/json"}) as http:
            next_at = time.monotonic()
            n = 0
            while not self._stop.is_set():
                self.post_one(http, f"p{n}")
                n += 1
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30.0,
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def retrain_until_accepted(url: str, timeout: float = 120.0) -> dict[str, Any]:
    """POST /v1/admin/retrain until it is accepted (409 while another runs)."""
    deadline = time.monotonic() + timeout
    with admin(url) as http:
        while True:
            response = http.post("/v1/admin/retrain")
            if response.status_code == 202:
                accepted: dict[str, Any] = response.json()
                return accepted
            if time.monotonic() > deadline:
                raise RuntimeError(f"retrain not accepted: {response.text}")
            time.sleep(0.5)


def wait_until(predicate: Any, timeout: float, every: float = 0.25) -> float:
    """Seconds until ``predicate()`` held (raises after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not reached within {timeout} s")
        time.sleep(every)
    return time.monotonic() - started


def job_status(cluster: Cluster, job_id: str) -> str:
    rows = cluster.query(f"SELECT status FROM jobs WHERE id = '{job_id}'")
    return str(rows[0][0]) if rows else "unknown"


def period_trained(cluster: Cluster, period_id: int) -> bool:
    rows = cluster.query(f"SELECT status FROM periods WHERE id = {int(period_id)}")
    return bool(rows) and rows[0][0] == "trained"


def stored_all(cluster: Cluster, accepted: set[str]) -> bool:
    stored = {r[0] for r in cluster.query("SELECT event_id FROM interactions")}
    return accepted <= stored


@dataclass
class Audit:
    lost: int
    doubled: int
    closed: int
    wrong_versions: list[int]

    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.wrong_versions)

    def describe(self) -> str:
        return (f"{self.lost} lost, {self.doubled} doubled; {self.closed} closed periods, "
                f"{len(self.wrong_versions)} without exactly one version"
                + (f" ({self.wrong_versions})" if self.wrong_versions else ""))


def audit(cluster: Cluster, accepted: set[str]) -> Audit:
    """Acknowledged rows against the database, and versions per closed period."""
    rows = [r[0] for r in cluster.query("SELECT event_id FROM interactions")]
    stored = set(rows)
    counts = dict(cluster.query(
        "SELECT p.id, count(v.version) FROM periods p LEFT JOIN model_versions v "
        "ON v.period_id = p.id WHERE p.status <> 'open' GROUP BY p.id"))
    return Audit(lost=len(accepted - stored), doubled=len(rows) - len(stored),
                 closed=len(counts), wrong_versions=sorted(p for p, n in counts.items() if n != 1))


def _period_of_rows(cluster: Cluster, poster: Poster, url: str, batches: int) -> None:
    with httpx.Client(base_url=url, timeout=30.0,
                      headers={"Content-Type": "application/json"}) as http:
        for n in range(batches):
            poster.post_one(http, f"d{time.monotonic_ns()}-{n}")


def drill_kill_worker(args: argparse.Namespace, report: Report) -> None:
    """kill -9 of the leading worker in the middle of a retrain; a standby leads."""
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory(prefix="smlrec-drill-") as name, \
            Cluster(Path(name), {"SMLREC_EMBED_DIM": "64"}) as cluster:
        url = cluster.start_api()
        for n in range(2):
            cluster.start_worker(f"worker{n}")
        poster = Poster(url, args.batch, 1.0)
        for r in range(args.repeat):
            _period_of_rows(cluster, poster, url, args.batches)
            wait_until(lambda: stored_all(cluster, poster.accepted), 120)
            accepted = retrain_until_accepted(url)
            wait_until(lambda a=accepted: job_status(cluster, a["job_id"]) == "running", 120,
                       0.02)
            victim = cluster.leader()
            assert victim is not None
            cluster.kill(victim)
            killed = time.monotonic()
            cluster.start_worker(f"worker-r{r}")  # the orchestrator's restart
            wait_until(lambda a=accepted: period_trained(cluster, a["period_id"]), 300)
            recoveries.append(time.monotonic() - killed)
        result = audit(cluster, poster.accepted)
    report.add(f"kill -9 of the leading worker mid-retrain, {args.repeat} times: acknowledged "
               "rows, versions", "0 lost, 0 doubled, one version per closed period",
               result.describe(), result.ok())
    report.add("  time to recover (kill to the period trained by the standby)", "reported",
               ", ".join(f"{t:.1f} s" for t in recoveries))


def drill_redis_restart(args: argparse.Namespace, report: Report) -> None:
    """Redis killed (-9) and restarted from its append-only file while clients post."""
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory(prefix="smlrec-drill-") as name, \
            Cluster(Path(name)) as cluster:
        url = cluster.start_api()
        cluster.start_worker("worker0")
        poster = Poster(url, args.batch, args.rate)
        poster.start()
        for _ in range(args.repeat):
            time.sleep(3.0)
            cluster.redis.kill()
            time.sleep(args.outage)
            cluster.redis.start()
            restarted = time.monotonic()
            before = poster.posted
            wait_until(lambda b=before: poster.posted > b + 2, 120)
            recoveries.append(time.monotonic() - restarted)
            accepted = retrain_until_accepted(url)
            wait_until(lambda a=accepted: period_trained(cluster, a["period_id"]), 300)
        poster.stop()
        wait_until(lambda: stored_all(cluster, poster.accepted), 300)
        result = audit(cluster, poster.accepted)
    report.add(f"Redis kill -9 and restart from its AOF, {args.repeat} times, clients posting",
               "0 lost, 0 doubled, one version per closed period", result.describe(),
               result.ok())
    report.add("  time to recover (restart to acknowledged batches again)", "reported",
               ", ".join(f"{t:.1f} s" for t in recoveries))


def drill_postgres_restart(args: argparse.Namespace, report: Report) -> None:
    """PostgreSQL stopped (immediate) and started again while clients post."""
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory(prefix="smlrec-drill-") as name, \
            Cluster(Path(name)) as cluster:
        url = cluster.start_api()
        cluster.start_worker("worker0")
        poster = Poster(url, args.batch, args.rate)
        poster.start()
        for _ in range(args.repeat):
            time.sleep(3.0)
            cluster.pg.stop()
            time.sleep(args.outage)
            cluster.pg.start()
            restarted = time.monotonic()
            snapshot = set(poster.accepted)
            wait_until(lambda s=snapshot: stored_all(cluster, s), 300)
            recoveries.append(time.monotonic() - restarted)
            accepted = retrain_until_accepted(url)
            wait_until(lambda a=accepted: period_trained(cluster, a["period_id"]), 300)
        poster.stop()
        wait_until(lambda: stored_all(cluster, poster.accepted), 300)
        result = audit(cluster, poster.accepted)
    report.add(f"PostgreSQL stopped ({args.outage:.0f} s) and started, {args.repeat} times, "
               "clients posting", "0 lost, 0 doubled, one version per closed period",
               result.describe(), result.ok())
    report.add("  time to recover (restart to every row acknowledged meanwhile stored)",
               "reported", ", ".join(f"{t:.1f} s" for t in recoveries))


def drill_disk_full(args: argparse.Namespace, report: Report) -> None:
    """MODEL_DIR on a small filesystem, filled up while a retrain runs, then freed."""
    recoveries: list[float] = []
    with tempfile.TemporaryDirectory(prefix="smlrec-drill-") as name:
        models = Path(name) / "models"
        models.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m", "tmpfs",
                        str(models)], check=True)
        try:
            with Cluster(Path(name), model_dir=models) as cluster:
                url = cluster.start_api()
                cluster.start_worker("worker0")
                poster = Poster(url, args.batch, 1.0)
                filler = models / "filler"
                for _ in range(args.repeat):
                    _period_of_rows(cluster, poster, url, args.batches)
                    wait_until(lambda: stored_all(cluster, poster.accepted), 120)
                    _fill(filler)
                    accepted = retrain_until_accepted(url)
                    wait_until(lambda a=accepted: "No space left" in
                               (cluster.query(f"SELECT coalesce(error, '') FROM jobs WHERE "
                                              f"id = '{a['job_id']}'")[0][0]), 120)
                    filler.unlink()
                    freed = time.monotonic()
                    wait_until(lambda a=accepted: period_trained(cluster, a["period_id"]), 300)
                    recoveries.append(time.monotonic() - freed)
                result = audit(cluster, poster.accepted)
        finally:
            subprocess.run(["umount", "-l", str(models)], check=False)
    report.add(f"MODEL_DIR full during a retrain ({args.disk_mb} MB filesystem), then freed, "
               f"{args.repeat} times", "0 lost, 0 doubled, one version per closed period",
               result.describe(), result.ok())
    report.add("  time to recover (space freed to the period trained; the retry waits out "
               "its backoff)", "reported", ", ".join(f"{t:.1f} s" for t in recoveries))


def _fill(path: Path) -> None:
    """Write until the filesystem is full."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass


DRILLS = {"kill-worker": drill_kill_worker, "redis-restart": drill_redis_restart,
          "postgres-restart": drill_postgres_restart, "disk-full": drill_disk_full}


def run(args: argparse.Namespace) -> Report:
    report = Report("Faults (distributed mode)")
    if args.drills:
        names = list(DRILLS) if args.drills == "all" else args.drills.split(",")
        for drill in names:
            DRILLS[drill](args, report)
        return report
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
