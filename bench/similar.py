"""Similar items at catalogue size: one request of ``GET /v1/items/{id}/similar``
is one call of :func:`engine.similar.similar_items`; this times it on a random
model (100,000 items x 64 by default), one thread, after the per-version norms
are cached (the first call of a version computes them: timed apart).

    python -m bench.similar [--items 100000] [--dim 64] [--requests 500] [--k 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.harness import Report, bench_main
from engine.holder import ServingModel
from engine.similar import similar_items
from store import ModelArtifact

TARGET_P99_MS = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.similar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _model(n_items: int, dim: int) -> ServingModel:
    generator = torch.Generator().manual_seed(0)
    artifact = ModelArtifact(
        version=1, period_id=0, strategy="sml", created_at=0.0,
        user=torch.randn(2, dim + 1, generator=generator),
        item=torch.randn(n_items, dim + 1, generator=generator),
        user_ids=["u0", "u1"], item_ids=[f"i{n}" for n in range(n_items)],
        seen_indptr=np.zeros(3, np.int64), seen_items=np.zeros(0, np.int64),
        popular=np.array([0], np.int64),
    )
    return ServingModel.from_payload(artifact.to_payload(), quantize=False)


def run(args: argparse.Namespace) -> Report:
    torch.set_num_threads(args.threads)
    model = _model(args.items, args.dim)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    similar_items(model, 0, args.k)
    first_ms = (time.perf_counter() - started) * 1000
    times = []
    for item in rng.integers(0, args.items, args.requests).tolist():
        started = time.perf_counter()
        similar_items(model, item, args.k)
        times.append((time.perf_counter() - started) * 1000)
    p50, p99 = np.percentile(times, [50, 99])
    report = Report("Similar items")
    size = f"{args.items:,} items x {args.dim}, k={args.k}, {args.threads} thread(s)"
    report.add(f"first call of a version (norms computed), {size}", "—", f"{first_ms:.1f} ms")
    report.add(f"similar items per request, {size}", f"p99 <= {TARGET_P99_MS:.0f} ms",
               f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({args.requests} requests)",
               p99 <= TARGET_P99_MS)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
