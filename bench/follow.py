"""What following a new model version costs one replica as users grow: one API
process (``smlrec serve``, embedded mode, its worker idle) with a model of N users x
M items x d dims and further versions written to the store.

Figures, from one run:

1. time until the first version's lists are complete (``SMLREC_PRECOMPUTE_USERS``
   of them at most), and resident memory then;
2. recommendation p99 at rest for ``--active`` distinct users (8 connections),
   first as they come (most have no list), then once each of them has asked once;
3. per new version, made active in the store as the worker does: seconds until
   the replica serves it (loading it, then ranking its active users while the
   previous version answers), p99 of the active users' requests over that time,
   and seconds until the rest of the lists are complete;
4. p99 at rest again, and resident memory, after the versions.

    python -m bench.follow --users 1000000 --items 100000     # minutes
    python -m bench.follow --users 20000 --items 20000 --versions 2
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import (
    Report,
    Server,
    bench_main,
    load,
    pooled_percentile,
    rss_bytes,
    serve,
    user_id,
)
from bench.serving import build
from engine.ranked import DEFAULT_CAPACITY
from store import Store

log = logging.getLogger("bench.follow")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--active", type=int, default=10_000,
                        help="distinct users the requests come from")
    parser.add_argument("--capacity", type=int, default=None,
                        help="SMLREC_PRECOMPUTE_USERS (default: the service's)")
    parser.add_argument("--versions", type=int, default=2, help="new versions to follow")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per load window")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _wait(server: Server, done: threading.Event, stamps: dict[str, float], version: int,
          listed: int, timeout: float) -> None:
    """Stamp when the replica serves ``version`` and when ``listed`` users of it
    have their lists (polled every 0.2 s); then set ``done``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        gauges = server.metrics("smlrec_active_model_version", "smlrec_ranked_users")
        if gauges.get("smlrec_active_model_version") == version:
            stamps.setdefault("serving", time.monotonic())
            if gauges.get("smlrec_ranked_users", 0.0) >= listed:
                stamps["listed"] = time.monotonic()
                break
        time.sleep(0.2)
    done.set()


def _follow(server: Server, args: argparse.Namespace, report: Report, paths: list[str],
            version: int, listed: int) -> None:
    done, stamps = threading.Event(), {}
    store = Store.from_url(server.env["SMLREC_DATABASE_URL"])
    try:
        store.set_active_version(version)
    finally:
        store.close()
    began = time.monotonic()
    watcher = threading.Thread(target=_wait, args=(server, done, stamps, version, listed,
                                                   args.timeout), daemon=True)
    watcher.start()
    windows = []
    while "serving" not in stamps and not done.is_set():
        windows.append(load(server.url, paths, seconds=args.window,
                            connections=args.connections, tool=args.tool))
    done.wait(args.timeout)
    if "serving" not in stamps:
        report.add(f"version {version}: served", "—", f"not within {args.timeout:.0f} s")
        return
    p99 = pooled_percentile(windows, 99)
    errors = sum(w.errors for w in windows)
    listed_after = (f"{stamps['listed'] - began:.1f} s" if "listed" in stamps
                    else f"not within {args.timeout:.0f} s")
    report.add(f"version {version}: made active in the store -> served by the replica "
               f"(p99 of the active users meanwhile; every list complete)", "—",
               f"{stamps['serving'] - began:.1f} s (p99 {p99:.1f} ms over "
               f"{sum(w.requests for w in windows):,} requests, {errors} errors; "
               f"lists complete after {listed_after})")


def _ask_each(server: Server, paths: Sequence[str], connections: int) -> float:
    """Each distinct path requested once, ``connections`` at a time; the seconds it took."""
    started = time.monotonic()
    with server.client(timeout=300.0) as client, ThreadPoolExecutor(connections) as pool:
        for response in pool.map(client.get, dict.fromkeys(paths)):
            response.raise_for_status()
    return time.monotonic() - started


def run(args: argparse.Namespace) -> Report:
    report = Report(f"Following new versions: {args.users:,} users x {args.items:,} items x "
                    f"{args.dim} dims, one API process (embedded mode)")
    rng = random.Random(5)
    paths = [f"/v1/users/{user_id(rng.randrange(args.users))}/recommendations?k=20"
             for _ in range(args.active)]
    with tempfile.TemporaryDirectory(prefix="smlrec-bench-follow-") as folder:
        started = time.monotonic()
        env = build(Path(folder), args, 1 + args.versions)
        report.add("build (store rows and model files)", "—",
                   f"{time.monotonic() - started:.0f} s")
        if args.capacity is not None:
            env["SMLREC_PRECOMPUTE_USERS"] = str(args.capacity)
        listed = min(args.users, args.capacity or DEFAULT_CAPACITY)
        with serve(env) as server:
            waited, _ = server.wait_ranked(listed, args.timeout)
            report.add(f"first version: lists of {listed:,} users complete after start-up",
                       "—", f"{waited:.0f} s, resident memory "
                       f"{rss_bytes(server.pid) / 2**20:,.0f} MiB")
            rest = load(server.url, paths, seconds=args.window, connections=args.connections,
                        tool=args.tool)
            report.add(f"p99 at rest, {args.active:,} distinct users, {args.connections} "
                       "connections (most without a list yet)", "—",
                       f"{rest.p99_ms:.1f} ms ({rest.rps:,.0f} req/s)")
            asked = _ask_each(server, paths, args.connections)
            rest = load(server.url, paths, seconds=args.window, connections=args.connections,
                        tool=args.tool)
            report.add("every one of them asks once (scored, then given the list of a user "
                       "no request looked up); p99 at rest then", "—",
                       f"{asked:.0f} s; {rest.p99_ms:.1f} ms ({rest.rps:,.0f} req/s)")
            for version in range(2, 2 + args.versions):
                _follow(server, args, report, paths, version, listed)
            after = load(server.url, paths, seconds=args.window, connections=args.connections,
                         tool=args.tool)
            report.add("p99 at rest after the versions (the active users ranked first)", "—",
                       f"{after.p99_ms:.1f} ms ({after.rps:,.0f} req/s)")
            report.add("resident memory after the versions", "—",
                       f"{rss_bytes(server.pid) / 2**20:,.0f} MiB")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
