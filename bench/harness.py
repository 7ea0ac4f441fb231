"""What the load benchmarks share: a service process started the way an operator
starts it (``smlrec serve``), a large model written straight through the store,
load generation (wrk when installed, else a small asyncio generator), resident
memory, and the results table.

Every load loop here is bounded both in time and in request count, and only
loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from sml.model import MFWeights
from store import ArtifactStore, NewInteraction, Store, popular_items
from store.migrate import upgrade
from worker.evaluate import SeenIndex
from worker.versions import model_payload

log = logging.getLogger(__name__)

ADMIN_TOKEN = "bench-admin"
LOOPBACK = "127.0.0.1"


# ---- the machine and the results table -----------------------------------------


def machine() -> str:
    """CPU model, core count and memory of this machine, in one line."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                      .splitlines() if line.startswith("MemTotal"))
        memory = f"{mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "? GiB"
    return f"{model}, {os.cpu_count()} cores, {memory}, Python {platform.python_version()}, " \
           f"torch {torch.__version__}"


@dataclass
class Figure:
    name: str
    target: str
    measured: str
    ok: bool | None  # None: no target to meet (context figure)


@dataclass
class Report:
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, target: str, measured: str, ok: bool | None = None) -> None:
        self.figures.append(Figure(name, target, measured, ok))
        log.info("%s: %s (target %s)%s", name, measured, target,
                 "" if ok is None else (" ok" if ok else " MISSED"))

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", f"Machine: {machine()}", "",
                 "| figure | target | measured | met |", "|---|---|---|---|"]
        for f in self.figures:
            met = "—" if f.ok is None else ("yes" if f.ok else "**no**")
            lines.append(f"| {f.name} | {f.target} | {f.measured} | {met} |")
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        sys.stdout.write("\n" + self.markdown())
        sys.stdout.flush()


def bench_main(
    argv: Sequence[str] | None,
    parse_args: Callable[[Sequence[str] | None], Any],
    run: Callable[[Any], Report],
    *,
    fail_on_miss: bool = False,
) -> int:
    """The command line every benchmark shares: run, print the table, write ``--json``.
    With ``fail_on_miss``, a missed target makes the exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    report = run(args)
    report.print()
    if args.json:
        args.json.write_text(json.dumps([f.__dict__ for f in report.figures], indent=2))
    missed = any(f.ok is False for f in report.figures)
    return 1 if fail_on_miss and missed else 0


# ---- a service process -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def metrics(self, *names: str) -> dict[str, float]:
        """The values of unlabelled samples of /metrics (absent ones left out)."""
        values: dict[str, float] = {}
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                values[name] = float(value)
        return values

    def wait_ranked(self, users: int, timeout: float) -> tuple[float, float]:
        """Wait until ``users`` users of the served version have their top lists
        (polled every 0.5 s, at most ``timeout`` s): (seconds waited, users ranked)."""
        started = time.monotonic()
        ranked = 0.0
        while time.monotonic() - started < timeout:
            ranked = self.metrics("smlrec_ranked_users").get("smlrec_ranked_users", 0.0)
            if ranked >= users:
                break
            time.sleep(0.5)
        return time.monotonic() - started, ranked


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Warm stop (SIGTERM), then SIGKILL if the process has not exited in ``timeout`` s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serve(env: dict[str, str], *, no_worker: bool = False,
          ready_timeout: float = 120.0) -> Iterator[Server]:
    """``smlrec serve`` on a free loopback port with ``env`` (SMLREC_*), until the
    block ends (SIGTERM, then SIGKILL after 30 s)."""
    port = free_port()
    full_env = {**os.environ, "SMLREC_HOST": LOOPBACK, "SMLREC_PORT": str(port),
                "SMLREC_ADMIN_TOKEN": ADMIN_TOKEN, "SMLREC_LOG_LEVEL": "WARNING", **env}
    command = [sys.executable, "-m", "smlrec.cli", "serve"] + (["--no-worker"] if no_worker
                                                                 else [])
    with tempfile.NamedTemporaryFile(prefix="smlrec-bench-", suffix=".log",
                                     delete=False) as log_file:
        process = subprocess.Popen(command, env=full_env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    server = Server(process, f"http://{LOOPBACK}:{port}", Path(log_file.name), full_env)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited ({process.returncode}): "
                                   f"{server.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(server.url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start in time")
            time.sleep(0.2)
        yield server
    finally:
        stop_process(process)
        server.log_path.unlink(missing_ok=True)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``smlrec worker`` with ``env`` (SMLREC_*), quiet; stop it with :func:`stop_process`."""
    return subprocess.Popen(
        [sys.executable, "-m", "smlrec.cli", "worker"],
        env={**os.environ, **env, "SMLREC_ADMIN_TOKEN": ADMIN_TOKEN,
             "SMLREC_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sqlite_env(folder: Path) -> dict[str, str]:
    """Embedded mode on a fresh SQLite database under ``folder``, manual periods."""
    url = f"sqlite:///{folder / 'smlrec.db'}"
    upgrade(url)
    return {"SMLREC_DATABASE_URL": url, "SMLREC_MODEL_DIR": str(folder / "models"),
            "SMLREC_PERIOD": "manual", "SMLREC_REDIS_URL": ""}


# ---- a large model written through the store -----------------------------------


def user_id(n: int) -> str:
    return f"u{n}"


def item_id(n: int) -> str:
    return f"i{n}"


def populate(store: Store, n_users: int, n_items: int, per_user: int = 1,
             batch: int = 10_000) -> None:
    """Register every user and item by logging ``per_user`` interactions per user
    (user u with items u, u + 1, ... modulo n_items; every item appears when
    n_users * per_user >= n_items)."""
    rows: list[NewInteraction] = []
    count = max(n_users * per_user, n_items)
    for n in range(count):
        rows.append(NewInteraction(user_id=user_id(n % n_users), item_id=item_id(n % n_items),
                                   ts=1.7e9 + n, event_id=None))
        if len(rows) >= batch:
            store.ingest(rows)
            rows = []
    if rows:
        store.ingest(rows)


def write_model(store: Store, model_dir: Path, dim: int, seed: int, *,
                activate: bool = True, period_id: int | None = None) -> int:
    """A model version over every user and item the store knows (random weights,
    the seen CSR of the interactions of ``period_id``, default the open period),
    recorded as the worker records a model trained on that period."""
    user_ids, item_ids = store.user_ids(), store.item_ids()
    n_users, n_items = len(user_ids), len(item_ids)
    generator = torch.Generator().manual_seed(seed)
    user = torch.randn(n_users, dim + 1, generator=generator) * 0.3
    item = torch.randn(n_items, dim + 1, generator=generator) * 0.3
    open_id = store.open_period().period_id if period_id is None else period_id
    arrays = store.period_arrays(open_id)
    version = (store.latest_version() or 0) + 1
    payload = model_payload(
        version=version, period_id=open_id, strategy="sml", weights=MFWeights(user, item),
        user_ids=user_ids, item_ids=item_ids,
        seen=SeenIndex.build(arrays.users, arrays.items, n_users),
        popular=popular_items(arrays.items))
    ref = ArtifactStore(model_dir).save(f"model-v{version:06d}.pt", payload)
    recorded = store.record_version(
        period_id=open_id, strategy="sml", path=ref.path, sha256=ref.sha256,
        size_bytes=ref.size_bytes, train_seconds=0.0, n_users=n_users, n_items=n_items)
    if activate:
        store.set_active_version(recorded)
    return recorded


# ---- load generation ---------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int  # non-2xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float
    tool: str
    # latency (whole microseconds) -> how many requests took it: pools windows
    histogram: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        return (f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"{self.errors} errors ({self.tool})")


def pooled_percentile(results: Sequence[LoadResult], q: float) -> float:
    """The ``q``-th percentile (ms) of the latencies of every request of ``results``
    taken together (not a percentile of their percentiles)."""
    merged: Counter[int] = Counter()
    for result in results:
        merged.update(result.histogram)
    total = sum(merged.values())
    if not total:
        return float("nan")
    rank = q / 100 * total
    seen = 0
    for value in sorted(merged):
        seen += merged[value]
        if seen >= rank:
            return value / 1000
    return max(merged) / 1000


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """
local paths = {%(paths)s}
local body = %(body)s
local n = 0
request = function()
  n = n + 1
  local path = paths[(n %% #paths) + 1]
  if body ~= nil then
    return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, "
    .. "\\"errors\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, "
    .. "\\"p99_us\\": %%d}\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
  local bins = {}
  for i = 1, #latency do
    local value, count = latency(i)
    bins[#bins + 1] = string.format("%%d:%%d", value, count)
  end
  io.write("HIST " .. table.concat(bins, ",") .. "\\n")
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(url: str, paths: Sequence[str], *, seconds: float, connections: int,
        threads: int = 1, body: str | None = None, timeout_s: float = 10.0) -> LoadResult:
    """Closed-loop load with wrk: ``connections`` keep-alive connections cycling
    through ``paths`` (POSTing ``body`` when given) for ``seconds``."""
    script = _WRK_SCRIPT % {
        "paths": ", ".join(_lua_string(p) for p in paths),
        "body": "nil" if body is None else _lua_string(body),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        completed = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:.0f}s",
             "--timeout", f"{timeout_s:.0f}s", "-s", handle.name, url],
            capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    finally:
        os.unlink(handle.name)
    match = re.search(r"^JSON (\{.*\})$", completed.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk failed: {completed.stdout[-1000:]} {completed.stderr[-1000:]}")
    data = json.loads(match.group(1))
    bins = re.search(r"^HIST (.*)$", completed.stdout, re.MULTILINE)
    histogram = {int(v): int(c) for v, c in (pair.split(":") for pair in
                                             (bins.group(1).split(",") if bins else [])
                                             if pair)}
    return LoadResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6,
        errors=data["errors"] + data["status"], p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000, tool="wrk", histogram=histogram)


async def _python_load(host: str, port: int, paths: Sequence[str], seconds: float,
                       connections: int, body: str | None, max_requests: int,
                       timeout_s: float) -> tuple[list[float], int, int, float]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + seconds
    payload = body.encode() if body is not None else b""

    def request(path: str) -> bytes:
        if body is None:
            return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload

    async def connection(slot: int) -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(host, port)
        n = slot
        try:
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                n += connections
                started = time.perf_counter()
                writer.write(request(paths[n % len(paths)]))
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
                    status = int(head.split(b" ", 2)[1])
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head)
                                 .group(1))  # type: ignore[union-attr]
                    await asyncio.wait_for(reader.readexactly(length), timeout_s)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    return
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(s) for s in range(connections)))
    return latencies, errors, sent, time.perf_counter() - started


def python_load(url: str, paths: Sequence[str], *, seconds: float, connections: int,
                body: str | None = None, max_requests: int = 1_000_000,
                timeout_s: float = 10.0) -> LoadResult:
    """The same closed loop as :func:`wrk` in Python (slower: for smoke tests and
    machines without wrk). Bounded by ``seconds`` and ``max_requests``."""
    parsed = httpx.URL(url)
    latencies, errors, _sent, elapsed = asyncio.run(_python_load(
        parsed.host, parsed.port or 80, paths, seconds, connections, body, max_requests,
        timeout_s))
    values = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    histogram = Counter(round(latency * 1e6) for latency in latencies)
    return LoadResult(requests=len(latencies), seconds=elapsed, errors=errors,
                      p50_ms=float(np.percentile(values, 50)),
                      p99_ms=float(np.percentile(values, 99)), tool="python",
                      histogram=dict(histogram))


def load(url: str, paths: Sequence[str], *, seconds: float, connections: int,
         body: str | None = None, tool: str = "auto") -> LoadResult:
    """wrk when installed (or asked for), else the Python generator."""
    if tool == "wrk" or (tool == "auto" and have_wrk()):
        return wrk(url, paths, seconds=seconds, connections=connections, body=body)
    return python_load(url, paths, seconds=seconds, connections=connections, body=body)
