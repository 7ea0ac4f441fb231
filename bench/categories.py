"""Filtered recommendations: one API process (``smlrec serve``, embedded mode) with a
model of N users x M items x d dims and item metadata in a realistic layout:
``--categories`` categories whose sizes follow Zipf's law (every item in one, a
tenth of them in a second), and ``--hidden`` of the items hidden.

Figures, once every user's top list is precomputed, at the same connection count:

1. ``GET /v1/users/{id}/recommendations?k=20`` (hidden items left out), p99;
2. the same with ``&category=C``, C drawn uniformly over the categories (most are
   small: answered from the category's sub-matrix), p99 against the target;
3. the same with C drawn by size (as traffic that follows the catalogue would:
   large categories are mostly answered from the precomputed lists);
4. how long one replica takes to apply a metadata change (one view rebuild).

    python -m bench.categories                   # the full-size run (minutes)
    python -m bench.categories --users 20000 --items 20000 --seconds 5
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, insert

from bench.harness import Report, Server, bench_main, load, serve, user_id
from bench.serving import build
from store.models import ItemMetadata

log = logging.getLogger("bench.categories")

TARGET_P99_MS = 20.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.categories", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--categories", type=int, default=200)
    parser.add_argument("--hidden", type=float, default=0.01, help="share of items hidden")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ranking-timeout", type=float, default=900.0)
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def layout(n_items: int, n_categories: int, hidden: float, seed: int = 0
           ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """Each item's categories, which items are hidden, and each category's size."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_categories + 1)  # Zipf, s = 1
    weights /= weights.sum()
    first = rng.choice(n_categories, n_items, p=weights)
    second = rng.choice(n_categories, n_items, p=weights)
    twice = rng.random(n_items) < 0.1
    names = [[f"c{a}"] + ([f"c{b}"] if t and b != a else [])
             for a, b, t in zip(first.tolist(), second.tolist(), twice.tolist(), strict=True)]
    sizes = np.bincount(first, minlength=n_categories)
    return names, rng.random(n_items) < hidden, sizes


def describe(database_url: str, names: list[list[str]], hidden: np.ndarray) -> None:
    """Every item's metadata in one transaction (as many PUTs would leave it)."""
    engine = create_engine(database_url)
    now = time.time()
    with engine.begin() as connection:
        connection.execute(insert(ItemMetadata), [
            {"external_id": f"i{n}", "categories": cats, "hidden": bool(hidden[n]),
             "revision": n + 1, "updated_at": now} for n, cats in enumerate(names)])
    engine.dispose()


def _paths(args: argparse.Namespace, categories: list[str] | None) -> list[str]:
    rng = random.Random(1)
    return [f"/v1/users/{user_id(rng.randrange(args.users))}/recommendations?k=20"
            + (f"&category={rng.choice(categories)}" if categories else "")
            for _ in range(1024)]


def _apply_seconds(server: Server) -> float:
    """PUT one item and wait until the replica's answer shows it hidden."""
    headers = {"Authorization": "Bearer bench"}
    user = "/v1/users/u0/recommendations?k=1"
    best = httpx.get(server.url + user, timeout=30).json()["items"][0]["item_id"]
    started = time.perf_counter()
    response = httpx.put(f"{server.url}/v1/items/{best}", json={"hidden": True},
                         headers=headers, timeout=30)
    response.raise_for_status()
    while httpx.get(server.url + user, timeout=30).json()["items"][0]["item_id"] == best:
        time.sleep(0.005)
    return time.perf_counter() - started


def _phase(server: Server, args: argparse.Namespace, report: Report, name: str,
           categories: list[str] | None, target: bool) -> None:
    paths = _paths(args, categories)
    load(server.url, paths, seconds=min(3.0, args.seconds), connections=args.connections,
         tool=args.tool)  # warm-up
    result = load(server.url, paths, seconds=args.seconds, connections=args.connections,
                  tool=args.tool)
    report.add(f"{name}, {args.connections} connections",
               f"p99 <= {TARGET_P99_MS:.0f} ms" if target else "—", result.describe(),
               result.p99_ms <= TARGET_P99_MS and result.errors == 0 if target else None)


def run(args: argparse.Namespace) -> Report:
    report = Report(f"Filtered recommendations: {args.users:,} users x {args.items:,} items x "
                    f"{args.dim} dims, {args.categories} Zipf-sized categories, "
                    f"{args.hidden:.0%} of items hidden, one API process (embedded mode)")
    names, hidden, sizes = layout(args.items, args.categories, args.hidden)
    with tempfile.TemporaryDirectory(prefix="smlrec-bench-categories-") as folder:
        env = build(Path(folder), argparse.Namespace(**vars(args)), 1)
        describe(env["SMLREC_DATABASE_URL"], names, hidden)
        env.update({"SMLREC_ADMIN_TOKEN": "bench", "SMLREC_LOG_LEVEL": "WARNING"})
        with serve(env) as server:
            report.add("precomputed top lists, every user", "—",
                       f"{server.wait_ranked(args.users, args.ranking_timeout)[0]:.0f} s")
            _phase(server, args, report, "unfiltered k=20", None, False)
            every = [f"c{c}" for c in range(args.categories)]
            _phase(server, args, report, "category k=20, categories uniform", every, True)
            by_size = random.Random(2).choices(every, weights=sizes.tolist(), k=1024)
            _phase(server, args, report, "category k=20, categories by size", by_size, True)
            report.add("a PUT until its replica answers with it", "—",
                       f"{1000 * _apply_seconds(server):.0f} ms")
    report.notes.append(f"categories: largest {sizes.max():,} items, median "
                        f"{int(np.median(sizes)):,}, smallest {sizes.min():,}")
    report.notes.append(f"load: tool={args.tool} (wrk when installed, else the Python "
                        "generator, which then bounds the throughput)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
