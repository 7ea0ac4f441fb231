"""The interaction export at log size: ``GET /v1/admin/interactions/export`` over a
SQLite store of a million typed, weighted interactions (by default), timed and
watched for memory.

Two passes over the whole log. The first goes through HTTP (the service on a
loopback port, the client reading the stream as it comes): rows per second and
MB per second, and how far the process's resident memory rose above where it
stood before the request. The second drives the route's own page loop without
HTTP under ``tracemalloc``: the peak of Python memory it allocated, against the
size of the export, shows that memory stays one page whatever the log's length.

    python -m bench.export [--interactions 1000000] [--users 50000] [--items 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import httpx
import uvicorn

from bench.harness import Report, bench_main, free_port
from service.routes import export
from smlrec.app import create_app
from smlrec.settings import Settings
from store import NewInteraction, Store
from store.migrate import upgrade

TYPES = ("view", "view", "view", "like", "purchase")
TARGET_GROWTH_MB = 50.0  # resident memory the export may add, whatever the log's length


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--folder", type=Path, help="where the SQLite file goes "
                        "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load(store: Store, n: int, n_users: int, n_items: int, batch: int = 10_000) -> float:
    """Log ``n`` interactions with types, weights and event ids; returns the seconds."""
    started = time.perf_counter()
    for start in range(0, n, batch):
        store.ingest([
            NewInteraction(f"u{k % n_users}", f"i{(k * 7919) % n_items}", 1.7e9 + k,
                           f"e{k}", TYPES[k % len(TYPES)], 1.0 + (k % 4) * 0.5)
            for k in range(start, min(start + batch, n))])
    return time.perf_counter() - started


def over_http(settings: Settings) -> tuple[int, int, float, float]:
    """(lines, bytes, seconds, resident MB the export added at its peak)."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings, run_worker=False),
                                           host="127.0.0.1", port=free_port(),
                                           log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.config.port}{export.router.prefix}/interactions/export"
    try:
        before = peak = _rss_mb()
        lines = size = 0
        started = time.perf_counter()
        with httpx.stream("GET", url, headers={"Authorization": "Bearer bench"},
                          timeout=600) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                lines += chunk.count(b"\n")
                size += len(chunk)
                peak = max(peak, _rss_mb())
        return lines, size, time.perf_counter() - started, peak - before
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def traced(store: Store) -> tuple[int, float]:
    """(bytes, peak MB of Python memory) of the route's page loop under tracemalloc."""
    through = store.last_interaction_id()
    tracemalloc.start()
    try:
        first = store.interactions_page(0, through, export.PAGE_ROWS)
        size = sum(len(chunk) for chunk in export._pages(store, first, through, None))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size, peak / 2**20


def run(args: argparse.Namespace) -> Report:
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        url = f"sqlite:///{folder / 'export.db'}"
        upgrade(url)
        store = Store.from_url(url)
        try:
            load_s = load(store, args.interactions, args.users, args.items)
            settings = Settings(database_url=url, model_dir=folder / "models",
                                admin_token="bench", period="manual", redis_url=None)
            lines, size, http_s, growth = over_http(settings)
            traced_size, peak = traced(store)
        finally:
            store.close()
    n = args.interactions
    report = Report("Interaction export")
    log_size = f"{n:,} interactions, {args.users:,} users x {args.items:,} items, SQLite"
    report.add(f"load ({log_size}), Store.ingest in batches of 10,000", "—",
               f"{load_s:.1f} s ({n / load_s:,.0f} interactions/s)")
    report.add(f"export over HTTP, {export.PAGE_ROWS:,} rows a page", "—",
               f"{lines:,} lines, {size / 2**20:.1f} MB in {http_s:.1f} s "
               f"({lines / http_s:,.0f} lines/s, {size / 2**20 / http_s:.1f} MB/s)",
               lines == n)
    report.add("resident memory the export added (server and client in one process)",
               f"<= {TARGET_GROWTH_MB:.0f} MB", f"{growth:.1f} MB", growth <= TARGET_GROWTH_MB)
    report.add("peak Python memory of the page loop (tracemalloc)", "one page's worth",
               f"{peak:.1f} MB for {traced_size / 2**20:.1f} MB exported "
               f"({peak / (traced_size / 2**20) * 100:.1f}%)", traced_size == size)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
