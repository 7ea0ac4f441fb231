"""Soak: the distributed mode under steady ingestion across many period
boundaries, on a private PostgreSQL and Redis (AOF, fsync always).

One API replica (``smlrec serve --no-worker``) and one ``smlrec worker``;
``--interactions`` rows are posted at ``--rate`` per second in batches with
unique event ids (clients retry a batch on 503 until it is acknowledged), the
count rule cuts ``--boundaries`` periods, and a second client asks for
recommendations meanwhile. Reported:

- Redis used memory at the end of the posting against its value after the first
  10% of it (the stream is trimmed, de-duplication marks expire after
  ``--dedup-window`` seconds: the level is rate x window, flat once the window
  has passed, so the first 10% must last longer than the window);
- MODEL_DIR against its retention bound (SMLREC_KEEP_VERSIONS + the active
  version, model files, plus the strategy checkpoint in use);
- acknowledged rows lost or doubled (every event id against the database), and
  closed periods without exactly one version;
- recommendations p50/p99.

    python -m bench.soak                                   # 2M rows, 40 boundaries
    python -m bench.soak --interactions 200000 --rate 1000 # smaller
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import redis

from bench.faults import Cluster, Poster, audit, stored_all, wait_until
from bench.harness import Report, bench_main

log = logging.getLogger("bench.soak")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=2_000_000)
    parser.add_argument("--boundaries", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2000.0, help="interactions per second")
    parser.add_argument("--batch", type=int, default=500, help="interactions per request")
    parser.add_argument("--dedup-window", type=float, default=300.0,
                        help="SMLREC_DEDUP_WINDOW_SECONDS")
    parser.add_argument("--keep-versions", type=int, default=5)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--users", type=int, default=50_000, help="user ids drawn from")
    parser.add_argument("--items", type=int, default=10_000, help="item ids drawn from")
    parser.add_argument("--reco-rate", type=float, default=20.0,
                        help="recommendation requests per second")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


class Recommendations:
    """GETs recommendations of known users at a steady pace; keeps latencies."""

    def __init__(self, url: str, per_second: float) -> None:
        self.url = url
        self.interval = 1.0 / per_second
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            n = 0
            while not self._stop.wait(self.interval):
                started = time.perf_counter()
                response = http.get(f"/v1/users/u{n % 1000}/recommendations", params={"k": 20})
                self.latencies.append(time.perf_counter() - started)
                self.errors += response.status_code != 200
                n += 1


def used_memory(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("memory")["used_memory"])


def model_dir_state(folder: Path) -> tuple[int, int, int]:
    """(model files, checkpoint files, bytes) in MODEL_DIR."""
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    models = sum(p.name.startswith("model-") for p in files)
    states = sum(p.name.startswith("state-") for p in files)
    return models, states, sum(p.stat().st_size for p in files)


def run(args: argparse.Namespace) -> Report:
    period = max(1, args.interactions // args.boundaries)
    report = Report(f"Soak (distributed mode): {args.interactions:,} interactions at "
                    f"{args.rate:,.0f}/s, count:{period} ({args.boundaries} boundaries), "
                    f"{args.users:,} users x {args.items:,} items, dim {args.embed_dim}")
    extra = {"SMLREC_PERIOD": f"count:{period}", "SMLREC_EMBED_DIM": str(args.embed_dim),
             "SMLREC_DEDUP_WINDOW_SECONDS": str(args.dedup_window),
             "SMLREC_KEEP_VERSIONS": str(args.keep_versions),
             "SMLREC_LOG_LEVEL": "WARNING", "SMLREC_LOCK_TTL_SECONDS": "10"}
    with tempfile.TemporaryDirectory(prefix="smlrec-soak-") as name, \
            Cluster(Path(name), extra) as cluster:
        url = cluster.start_api()
        cluster.start_worker("worker0")
        poster = Poster(url, args.batch, args.rate, args.users, args.items, seed=0)
        reco = Recommendations(url, args.reco_rate)
        started = time.monotonic()
        poster.start()
        reco.start()
        batches = args.interactions // args.batch
        wait_until(lambda: poster.posted >= batches // 10, args.interactions / args.rate * 5,
                   every=1.0)
        at_tenth = used_memory(cluster.redis.url)
        tenth_s = time.monotonic() - started
        peak_models = (0, 0, 0)
        while poster.posted < batches:
            time.sleep(2.0)
            state = model_dir_state(cluster.model_dir)
            peak_models = max(peak_models, state)
        poster.stop()
        posting_s = time.monotonic() - started
        at_end = used_memory(cluster.redis.url)
        reco.stop()
        wait_until(lambda: stored_all(cluster, poster.accepted), args.drain_timeout, every=2.0)
        wait_until(lambda: not cluster.query(
            "SELECT 1 FROM jobs WHERE status IN ('queued', 'running') LIMIT 1"),
            args.drain_timeout, every=2.0)
        result = audit(cluster, poster.accepted)
        final_models = model_dir_state(cluster.model_dir)
        trimmed = cluster.query("SELECT count(*) FROM interactions")[0][0]
        with redis.Redis.from_url(cluster.redis.url) as client:
            stream_length = client.xlen("smlrec:interactions")
    growth = at_end / at_tenth - 1
    report.add("Redis used memory, end of posting vs after the first 10%", "within 20%",
               f"{at_end / 2**20:.1f} MiB vs {at_tenth / 2**20:.1f} MiB ({growth:+.0%}); "
               f"10% took {tenth_s:.0f} s, window {args.dedup_window:g} s; stream length at "
               f"the end {stream_length}", abs(growth) <= 0.2)
    bound = args.keep_versions + 1
    report.add("MODEL_DIR: model files / checkpoints (largest seen; at the end)",
               f"<= {bound} models + 1 checkpoint (+1 of each while one is written)",
               f"{peak_models[0]} / {peak_models[1]} ({peak_models[2] / 2**20:.1f} MiB); "
               f"{final_models[0]} / {final_models[1]} ({final_models[2] / 2**20:.1f} MiB)",
               final_models[0] <= bound and final_models[1] <= 1
               and peak_models[0] <= bound + 1 and peak_models[1] <= 2)
    report.add("Acknowledged interactions and versions", "0 lost, 0 doubled, one version "
               "per closed period", f"{len(poster.accepted):,} acknowledged, {trimmed:,} "
               f"stored; {result.describe()}", result.ok())
    latencies = np.asarray(reco.latencies) * 1000
    if latencies.size:
        report.add("Recommendations during the soak", "reported",
                   f"{latencies.size:,} requests, p50 {np.percentile(latencies, 50):.1f} ms, "
                   f"p99 {np.percentile(latencies, 99):.1f} ms, {reco.errors} errors")
    report.add("Posting", "steady", f"{posting_s:.0f} s, {poster.posted:,} batches, "
               f"{len(poster.accepted) / posting_s:,.0f} interactions/s, {poster.errors} "
               "retried answers")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, fail_on_miss=True)


if __name__ == "__main__":
    raise SystemExit(main())
