"""Ingestion benchmark: interactions accepted per second, and proof that every
accepted one is stored.

- embedded: ``smlrec serve`` on SQLite; clients POST 1,000 interactions per
  request (each with its own event id); afterwards the database must hold
  exactly the accepted ones.
- distributed (``--distributed``, needs PostgreSQL and Redis): ``smlrec serve
  --no-worker`` appends to the Redis stream; then one ``smlrec worker`` drains
  the stream into PostgreSQL, timed until the database holds every accepted row.
  Uses keys of its own in Redis database 14 (a prefix unique to the run,
  deleted afterwards) and a PostgreSQL schema of its own (dropped afterwards),
  so two runs at once, or a run beside the test suite, do not meet.

    python -m bench.ingestion                         # embedded
    python -m bench.ingestion --distributed           # both
    python -m bench.ingestion --seconds 2 --clients 2 # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.harness import (
    Report,
    bench_main,
    serve,
    sqlite_env,
    start_worker,
    stop_process,
)
from store import Store
from store.migrate import upgrade

log = logging.getLogger("bench.ingestion")

EMBEDDED_TARGET = 20_000
STREAM_TARGET = 50_000
DRAIN_TARGET = 20_000
POSTGRES_URL = os.environ.get("SMLREC_BENCH_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SMLREC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingestion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="interactions per request")
    parser.add_argument("--max-requests", type=int, default=2000, help="bound on requests")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def _bodies(count: int, batch: int, tag: str) -> list[bytes]:
    """``count`` request bodies of ``batch`` interactions, every event id unique."""
    bodies = []
    for r in range(count):
        rows = [{"user_id": f"u{(r * batch + n) % 50_000}", "item_id": f"i{(r * 7 + n) % 20_000}",
                 "timestamp": 1.7e9 + n, "event_id": f"{tag}-{r}-{n}"} for n in range(batch)]
        bodies.append(json.dumps({"interactions": rows}).encode())
    return bodies


def post_load(url: str, bodies: list[bytes], seconds: float,
              clients: int) -> tuple[int, int, float]:
    """POST the bodies from ``clients`` threads until they run out or ``seconds``
    pass. Returns (interactions accepted, failed requests, elapsed seconds)."""
    lock = threading.Lock()
    next_body = 0
    accepted = failed = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal next_body, accepted, failed
        with httpx.Client(base_url=url, timeout=60.0,
                          headers={"Content-Type": "application/json"}) as http:
            while time.monotonic() < deadline:
                with lock:
                    if next_body >= len(bodies):
                        return
                    body, next_body = bodies[next_body], next_body + 1
                response = http.post("/v1/interactions", content=body)
                with lock:
                    if response.status_code == 202:
                        accepted += int(response.json()["accepted"])
                    else:
                        failed += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return accepted, failed, time.perf_counter() - started


def embedded(args: argparse.Namespace, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="smlrec-bench-ingest-") as folder:
        env = sqlite_env(Path(folder))
        bodies = _bodies(args.max_requests, args.batch, "e")
        with serve(env, no_worker=True) as server:
            post_load(server.url, bodies[:2], 5.0, 1)  # warm-up (2 requests)
            accepted, failed, elapsed = post_load(server.url, bodies[2:], args.seconds,
                                                  args.clients)
        store = Store.from_url(env["SMLREC_DATABASE_URL"])
        try:
            stored = sum(p.n_interactions for p in store.list_periods())
        finally:
            store.close()
    warm = 2 * args.batch
    rate = accepted / elapsed
    report.add(f"embedded ingestion, {args.batch}/request, {args.clients} clients (SQLite)",
               f">= {EMBEDDED_TARGET:,}/s", f"{rate:,.0f}/s ({accepted:,} in {elapsed:.1f} s, "
               f"{failed} failed requests)", rate >= EMBEDDED_TARGET and failed == 0)
    report.add("embedded: accepted interactions in the database afterwards", "all, once",
               f"{stored - warm:,} stored of {accepted:,} accepted",
               stored - warm == accepted)


@contextmanager
def _postgres_schema() -> Iterator[str]:
    name = f"smlrec_bench_{uuid.uuid4().hex[:10]}"
    libpq = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        upgrade(rendered)
        yield rendered
    finally:
        with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))


def _clear_redis(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def distributed(args: argparse.Namespace, report: Report) -> None:
    redis_client = redis.Redis.from_url(REDIS_URL)
    prefix = f"smlrec-bench-{uuid.uuid4().hex[:10]}"
    try:
        with tempfile.TemporaryDirectory(prefix="smlrec-bench-ingest-") as folder, \
                _postgres_schema() as database_url:
            env = {"SMLREC_DATABASE_URL": database_url, "SMLREC_REDIS_URL": REDIS_URL,
                   "SMLREC_REDIS_PREFIX": prefix,
                   "SMLREC_MODEL_DIR": str(Path(folder) / "models"), "SMLREC_PERIOD": "manual"}
            bodies = _bodies(args.max_requests, args.batch, "d")
            with serve(env, no_worker=True) as server:
                accepted, failed, elapsed = post_load(server.url, bodies, args.seconds,
                                                      args.clients)
            rate = accepted / elapsed
            report.add(f"distributed: into the Redis stream, {args.batch}/request, "
                       f"{args.clients} clients", f">= {STREAM_TARGET:,}/s",
                       f"{rate:,.0f}/s ({accepted:,} in {elapsed:.1f} s, {failed} failed)",
                       rate >= STREAM_TARGET and failed == 0)
            _drain(env, accepted, args, report)
    finally:
        _clear_redis(redis_client, prefix)
        redis_client.close()


def _drain(env: dict[str, str], accepted: int, args: argparse.Namespace,
           report: Report) -> None:
    store = Store.from_url(env["SMLREC_DATABASE_URL"])
    worker = start_worker(env)
    try:
        started = time.perf_counter()
        first_at: float | None = None  # when the first row landed (worker started up)
        stored = 0
        while time.perf_counter() - started < args.drain_timeout:
            stored = store.count_open()
            if stored and first_at is None:
                first_at = time.perf_counter()
            if stored >= accepted or worker.poll() is not None:
                break
            time.sleep(0.05)
        finished = time.perf_counter()
    finally:
        stop_process(worker)
    stored = store.count_open()
    store.close()
    draining = finished - (first_at if first_at is not None else started)
    rate = stored / draining if draining > 0 else 0.0
    report.add("distributed: worker drains the stream into PostgreSQL",
               f">= {DRAIN_TARGET:,}/s", f"{rate:,.0f}/s ({stored:,} in {draining:.1f} s after "
               f"the first row; {finished - started:.1f} s with worker start-up)",
               rate >= DRAIN_TARGET)
    report.add("distributed: accepted interactions in the database afterwards", "all, once",
               f"{stored:,} stored of {accepted:,} accepted", stored == accepted)


def run(args: argparse.Namespace) -> Report:
    report = Report("Ingestion")
    embedded(args, report)
    if args.distributed:
        distributed(args, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
