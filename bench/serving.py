"""Serving benchmark: one API process (``smlrec serve``, embedded mode) with a
model of N users x M items x d dims written straight through the store.

Figures, all from one run of one process (this machine is shared and noisy, so
ratios are measured side by side):

0. how long the service takes to precompute every user's top list after it
   loads the model (``SMLREC_PRECOMPUTE_DEPTH``; the figures below are taken
   once it has: ``--precompute-depth 0`` measures scoring every request);
1. ``/healthz`` and ``GET /v1/users/{id}/recommendations?k=20`` throughput at
   the same connection count, their ratio and the p99 of recommendations;
2. ``POST /v1/recommendations`` with 1,000 users per request, in users/s;
3. hot swaps under load: every swap an admin activation while recommendations
   are served; failed requests, and resident memory before and after;
4. p99 of recommendations during a retrain (the embedded worker trains the
   open period, and with ``--challengers`` the challenger strategies after it)
   against p99 at rest at the same load, measured back to back in windows of
   equal length, over several rounds.

    python -m bench.serving                      # the full-size run (minutes)
    python -m bench.serving --users 2000 --items 2000 --seconds 2 --swaps 3

Load comes from wrk when it is installed (``apt-get install wrk``), else from a
slower Python generator (then the throughput figures mostly measure the generator).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    LoadResult,
    Report,
    Server,
    bench_main,
    item_id,
    load,
    pooled_percentile,
    populate,
    rss_bytes,
    serve,
    sqlite_env,
    user_id,
    write_model,
)
from store import Store

log = logging.getLogger("bench.serving")

RECO_TARGET_RATIO = 0.5
P99_TARGET_MS = 50.0
BATCH_TARGET_USERS_S = 20_000
RETRAIN_P99_FACTOR = 2.0
PHASES = ("arithmetic", "throughput", "batch", "swaps", "retrain")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch-users", type=int, default=1000)
    parser.add_argument("--batch-connections", type=int, default=2)
    parser.add_argument("--swaps", type=int, default=100)
    parser.add_argument("--swap-timeout", type=float, default=600.0)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--retrain-connections", type=int, default=8)
    parser.add_argument("--retrain-users", type=int, default=512,
                        help="distinct users the retrain figure's requests ask for "
                             "(the users active while the version serves)")
    parser.add_argument("--retrains", type=int, default=3, help="rounds of the retrain figure")
    parser.add_argument("--retrain-window", type=float, default=5.0,
                        help="seconds of each load window (at rest, then from the retrain on)")
    parser.add_argument("--retrain-timeout", type=float, default=300.0)
    parser.add_argument("--precompute-depth", type=int, default=None,
                        help="SMLREC_PRECOMPUTE_DEPTH of the service (default: its own; "
                             "0: every request is scored)")
    parser.add_argument("--ranking-timeout", type=float, default=900.0)
    parser.add_argument("--challengers", default="",
                        help="SMLREC_CHALLENGERS of the service: the retrain figure then "
                             "covers the challengers' part of each boundary too")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _reco_paths(n_users: int, count: int = 512, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"/v1/users/{user_id(rng.randrange(n_users))}/recommendations?k=20"
            for _ in range(count)]


def _batch_body(n_users: int, size: int, seed: int = 2) -> str:
    rng = random.Random(seed)
    ids = [user_id(rng.randrange(n_users)) for _ in range(size)]
    return json.dumps({"user_ids": ids, "k": 20})


def build(folder: Path, args: argparse.Namespace, versions: int) -> dict[str, str]:
    env = sqlite_env(folder)
    store = Store.from_url(env["SMLREC_DATABASE_URL"])
    try:
        started = time.perf_counter()
        populate(store, args.users, args.items)
        # the versions stand for models trained on a closed period: a retrain then
        # has to train the next one (a version of the open period would finish its
        # retrain job at once, with nothing trained)
        closed = store.close_period()
        if closed is None:
            raise RuntimeError("populating logged no interactions")
        for seed in range(versions):
            write_model(store, Path(env["SMLREC_MODEL_DIR"]), args.dim, seed,
                        activate=seed == 0, period_id=closed.period_id)
        log.info("built %d users x %d items x %d dims, %d versions in %.1f s", args.users,
                 args.items, args.dim, versions, time.perf_counter() - started)
    finally:
        store.close()
    return env


def _throughput(server: Server, args: argparse.Namespace, report: Report) -> LoadResult:
    paths = _reco_paths(args.users)
    load(server.url, paths, seconds=min(3.0, args.seconds), connections=args.connections,
         tool=args.tool)  # warm-up
    health = load(server.url, ["/healthz"], seconds=args.seconds,
                  connections=args.connections, tool=args.tool)
    reco = load(server.url, paths, seconds=args.seconds, connections=args.connections,
                tool=args.tool)
    ratio = reco.rps / health.rps if health.rps else 0.0
    report.add(f"/healthz, {args.connections} connections", "—", health.describe())
    precomputed = server.metrics("smlrec_precomputed_answers_total").get(
        "smlrec_precomputed_answers_total", 0.0)
    report.add(f"recommendations k=20, {args.connections} connections", "—",
               f"{reco.describe()}; mean scoring batch {_mean_batch(server):.1f} users; "
               f"{precomputed:,.0f} answers from precomputed lists so far")
    report.add("recommendations / healthz throughput", f">= {RECO_TARGET_RATIO:.0%}",
               f"{ratio:.0%}", ratio >= RECO_TARGET_RATIO and reco.errors == 0)
    report.add("recommendations p99", f"<= {P99_TARGET_MS:.0f} ms", f"{reco.p99_ms:.1f} ms",
               reco.p99_ms <= P99_TARGET_MS)
    return reco


def _mean_batch(server: Server) -> float:
    """Mean size of the batcher's batches so far (from /metrics)."""
    values = server.metrics("smlrec_scoring_batch_size_sum",
                            "smlrec_scoring_batch_size_count")
    count = values.get("smlrec_scoring_batch_size_count", 0.0)
    return values.get("smlrec_scoring_batch_size_sum", 0.0) / count if count else 0.0


def _wait_ranked(server: Server, args: argparse.Namespace) -> tuple[float, float]:
    """Wait until the service has precomputed every user's top list of the
    version it serves: (seconds waited, users ranked)."""
    return server.wait_ranked(args.users, args.ranking_timeout)


def _ranking(server: Server, args: argparse.Namespace, report: Report) -> None:
    seconds, ranked = _wait_ranked(server, args)
    report.add("precomputed top lists, every user (after the service is up)", "—",
               f"{seconds:.0f} s" if ranked >= args.users
               else f"{ranked:,.0f} of {args.users:,} users after {seconds:.0f} s")


def _batch(server: Server, args: argparse.Namespace, report: Report) -> None:
    body = _batch_body(args.users, args.batch_users)
    result = load(server.url, ["/v1/recommendations"], seconds=args.seconds,
                  connections=args.batch_connections, body=body, tool=args.tool)
    users_s = result.rps * args.batch_users
    report.add(f"batch endpoint, {args.batch_users} users/request, "
               f"{args.batch_connections} connections", f">= {BATCH_TARGET_USERS_S:,} users/s",
               f"{users_s:,.0f} users/s (p99 {result.p99_ms:.0f} ms, {result.errors} errors)",
               users_s >= BATCH_TARGET_USERS_S and result.errors == 0)


def _swaps(server: Server, args: argparse.Namespace, report: Report, versions: int) -> None:
    """``args.swaps`` activations under load; failed requests, and resident memory
    after them against before, both with the served version's lists complete."""
    if args.swaps <= 0:
        return
    paths = _reco_paths(args.users, seed=3)
    before = rss_bytes(server.pid)
    done = threading.Event()
    swap_errors: list[str] = []
    swapped = 0

    def swap_loop() -> None:
        nonlocal swapped
        deadline = time.monotonic() + args.swap_timeout
        with server.client(timeout=120.0) as client:
            for n in range(args.swaps):
                if time.monotonic() > deadline:
                    swap_errors.append(f"stopped after {n} swaps: time bound reached")
                    break
                version = 1 + (n + 1) % versions  # 2, 3, 1, 2, ...: always a change
                response = client.post(f"/v1/admin/models/{version}/activate")
                if response.status_code != 200:
                    swap_errors.append(f"activate {version}: {response.status_code}")
                else:
                    swapped += 1
        done.set()

    thread = threading.Thread(target=swap_loop, daemon=True)
    started = time.monotonic()
    thread.start()
    requests = errors = 0
    p99 = 0.0
    while not done.is_set() and time.monotonic() - started < args.swap_timeout + 10:
        result = load(server.url, paths, seconds=min(5.0, args.seconds),
                      connections=args.connections, tool=args.tool)
        requests += result.requests
        errors += result.errors
        p99 = max(p99, result.p99_ms)
    thread.join(timeout=60)
    elapsed = time.monotonic() - started
    with server.client() as client:
        client.post("/v1/admin/models/1/activate")
    if args.precompute_depth != 0:  # as before the swaps: the served version's lists complete
        _wait_ranked(server, args)
    time.sleep(1.0)
    after = rss_bytes(server.pid)
    model_bytes = max(_model_bytes(args), _artifact_bytes(server))
    report.add(f"{swapped} hot swaps under load ({elapsed:.0f} s)", "0 failed requests",
               f"{errors} failed of {requests:,} (worst 5-s p99 {p99:.0f} ms)"
               + (f"; {'; '.join(swap_errors[:3])}" if swap_errors else ""),
               errors == 0 and not swap_errors and swapped == args.swaps)
    growth = after - before
    report.add("resident memory after the swaps - before", f"<= one model "
               f"({model_bytes / 2**20:.0f} MiB: its artifact)",
               f"{growth / 2**20:+.0f} MiB ({before / 2**20:.0f} -> {after / 2**20:.0f} MiB)",
               growth <= model_bytes)


def _artifact_bytes(server: Server) -> int:
    """Size of the version-1 artifact (tables, ids, seen items)."""
    path = Path(server.env["SMLREC_MODEL_DIR"]) / "model-v000001.pt"
    return path.stat().st_size if path.exists() else 0


def _model_bytes(args: argparse.Namespace) -> int:
    """Tensors of one model (user and item tables, float32)."""
    return (args.users + args.items) * (args.dim + 1) * 4


def _retrain(server: Server, args: argparse.Namespace, report: Report) -> None:
    """``--retrains`` rounds, each back to back: a window of load at rest, then
    windows of the same length from the retrain request until the job has
    finished (training, artifact write, the challengers) and the replica serves
    the new version with every user's list (staging, swap, ranking). Each round
    compares the p99 of every request served during the retrain, pooled, with
    the p99 of the window at rest. Before each round a period's worth of
    interactions (one per user) is logged through the API: that is what the job
    trains on; and the served version's top lists are complete (the previous
    round's swap started them over)."""
    paths = _reco_paths(args.users, count=args.retrain_users, seed=4)
    ratios: list[float] = []
    details: list[str] = []
    with server.client(timeout=120.0) as client:
        for round_ in range(args.retrains):
            _log_period(client, args, seed=round_)
            if args.precompute_depth != 0:  # at rest: the served version's lists complete
                _wait_ranked(server, args)
            rest = load(server.url, paths, seconds=args.retrain_window,
                        connections=args.retrain_connections, tool=args.tool)
            accepted = client.post("/v1/admin/retrain")
            if accepted.status_code != 202:
                report.notes.append(f"retrain round {round_ + 1} not started: "
                                    f"{accepted.status_code} {accepted.text}")
                break
            job_id = accepted.json()["job_id"]
            started = time.monotonic()
            during = [load(server.url, paths, seconds=args.retrain_window,
                           connections=args.retrain_connections, tool=args.tool)]
            job = client.get(f"/v1/admin/jobs/{job_id}").json()
            while job["status"] not in ("succeeded", "failed"):  # longer than the window
                if time.monotonic() - started > args.retrain_timeout:
                    break
                during.append(load(server.url, paths, seconds=args.retrain_window,
                                   connections=args.retrain_connections, tool=args.tool))
                job = client.get(f"/v1/admin/jobs/{job_id}").json()
            took = ((job["finished_at"] or 0.0) - (job["started_at"] or 0.0)
                    if job["status"] == "succeeded" else time.monotonic() - started)
            while job["status"] == "succeeded" and not _settled(server, args, job) \
                    and time.monotonic() - started < args.retrain_timeout:
                during.append(load(server.url, paths, seconds=args.retrain_window,
                                   connections=args.retrain_connections, tool=args.tool))
            settled = time.monotonic() - started
            p99_rest = pooled_percentile([rest], 99)
            p99_during = pooled_percentile(during, 99)
            errors = sum(r.errors for r in during)
            ratio = p99_during / p99_rest if p99_rest else float("inf")
            ratios.append(ratio if job["status"] == "succeeded" and not errors else float("inf"))
            windows = "/".join(f"{r.p99_ms:.0f}" for r in during)
            details.append(f"{p99_during:.1f} vs {p99_rest:.1f} ms ({ratio:.2f}x; job "
                           f"{job['status']} in {took:.1f} s, new version served with "
                           f"its lists after {settled:.0f} s, {errors} errors; "
                           f"p99 of each window {windows} ms)")
    if not ratios:
        return
    median = sorted(ratios)[len(ratios) // 2]
    report.add(f"recommendations p99 during a retrain / at rest, {args.retrain_connections} "
               f"connections, every request of the retrain pooled against a "
               f"{args.retrain_window:.0f}-s window at rest just before "
               f"({len(ratios)} rounds, median)", f"<= {RETRAIN_P99_FACTOR:.0f}x",
               f"{median:.2f}x; rounds: {'; '.join(details)}",
               median <= RETRAIN_P99_FACTOR)


def _settled(server: Server, args: argparse.Namespace, job: dict[str, Any]) -> bool:
    """Whether the replica serves the job's version with every user's list
    (lists off: serves it): the end of what a boundary does to serving."""
    values = server.metrics("smlrec_active_model_version", "smlrec_ranked_users")
    serving = values.get("smlrec_active_model_version") == job["model_version"]
    return serving and (args.precompute_depth == 0
                        or values.get("smlrec_ranked_users", 0.0) >= args.users)


def _log_period(client: httpx.Client, args: argparse.Namespace, seed: int) -> None:
    """One interaction per user, each with a random item, through the API."""
    rng = random.Random(seed)
    rows = [{"user_id": user_id(u), "item_id": item_id(rng.randrange(args.items)),
             "timestamp": 1.7e9 + seed * args.users + u} for u in range(args.users)]
    for start in range(0, len(rows), 1000):
        response = client.post("/v1/interactions",
                               json={"interactions": rows[start : start + 1000]})
        response.raise_for_status()


def _arithmetic(env: dict[str, str], report: Report) -> None:
    """The scorer alone, in this process on one core: what a user costs without
    HTTP, one at a time and in batches (the ceiling the service works under),
    in float32 and through the int8 candidate pass, and which of the two the
    service picks on this CPU (``SMLREC_INT8_SCORING=auto``)."""
    import dataclasses

    import torch

    from engine.holder import ServingModel
    from engine.quantized import INT8_MIN_SPEEDUP, int8_speedup
    from engine.scorer import QUANTIZED_MIN_USERS, top_k

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        speedup = int8_speedup()
        report.add("int8 / float32 product speed on this CPU (auto uses int8 from "
                   f"{INT8_MIN_SPEEDUP:.1f}x)", "—",
                   f"{speedup:.2f}x: the service scores in "
                   f"{'int8 then float32' if speedup >= INT8_MIN_SPEEDUP else 'float32'}")
        folder = Path(env["SMLREC_MODEL_DIR"])
        payload = torch.load(folder / "model-v000001.pt", weights_only=True)
        int8 = ServingModel.from_payload(payload, quantize=True)
        float32 = dataclasses.replace(int8, quantized=None)
        rng = random.Random(5)
        for size, rounds in ((1, 40), (64, 4), (1000, 1)):
            users = [rng.randrange(float32.n_users) for _ in range(size)]
            for model, how in ((float32, "float32"), (int8, "int8 candidates")):
                if model is int8 and size < QUANTIZED_MIN_USERS:
                    continue  # float32 either way
                top_k(model, users, 20)  # warm
                started = time.perf_counter()
                for _ in range(rounds):
                    top_k(model, users, 20)
                per_user = (time.perf_counter() - started) / rounds / size
                report.add(f"scoring alone, {size} user(s) at once, one core, {how}", "—",
                           f"{per_user * 1000:.2f} ms/user ({1 / per_user:,.0f} users/s)")
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> Report:
    report = Report(f"Serving: {args.users:,} users x {args.items:,} items x {args.dim} dims, "
                    "one API process (embedded mode)")
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if phases - set(PHASES):
        raise SystemExit(f"unknown phases: {', '.join(sorted(phases - set(PHASES)))}")
    versions = 3 if "swaps" in phases and args.swaps > 0 else 1
    with tempfile.TemporaryDirectory(prefix="smlrec-bench-serving-") as folder:
        env = build(Path(folder), args, versions)
        if "arithmetic" in phases:
            _arithmetic(env, report)
        if args.precompute_depth is not None:
            env["SMLREC_PRECOMPUTE_DEPTH"] = str(args.precompute_depth)
        if args.challengers:
            env["SMLREC_CHALLENGERS"] = args.challengers
            report.title += f", challengers {args.challengers}"
        with serve(env) as server:
            if args.precompute_depth != 0:
                _ranking(server, args, report)
            if "throughput" in phases:
                _throughput(server, args, report)
            if "batch" in phases:
                _batch(server, args, report)
            if "swaps" in phases:
                _swaps(server, args, report, versions)
            if "retrain" in phases:
                _retrain(server, args, report)
    report.notes.append(f"load: {'wrk' if args.tool != 'python' else 'python'} when installed "
                        f"(tool={args.tool}); log level WARNING (no access log)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
