"""``smlrec load``: the demo client.

Replays a data set against a running service as a live stream would: it posts
the interactions in time order (chunks of 1,000, each row with an event id, so
a re-run is idempotent), asks for a retrain after every ``period_size`` rows,
waits for the job, and finally reports the per-period online Recall@20 and
NDCG@20 that the service recorded on its model versions (each version scored on
the period after the one it was trained on, before that period trained anything).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from sml.data import InteractionLog
from sml.readers import load_dataset
from smlrec.client import (
    Client,
    Conflict,
    Interaction,
    Job,
    RetryPolicy,
    SmlrecError,
    Unavailable,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 1000
# a service that restarts or fails over answers 503 or drops connections for a while
RETRY = RetryPolicy(attempts=8, max_total_s=300.0, backoff_s=1.0, max_backoff_s=10.0)


class LoadError(RuntimeError):
    """The service refused or failed a step of the demo."""


@dataclass(frozen=True)
class LoadConfig:
    dataset: str
    url: str
    period_size: int = 5000
    admin_token: str | None = None
    api_key: str | None = None
    limit_periods: int | None = None
    chunk_size: int = CHUNK_SIZE
    job_timeout_s: float = 600.0
    ingest_timeout_s: float = 60.0
    poll_s: float = 0.2


@dataclass(frozen=True)
class PeriodMetrics:
    """A version's online figures on the period after its own."""

    version: int
    trained_on: int
    evaluated_on: int | None
    strategy: str
    recall: float | None
    ndcg: float | None
    n_interactions: int | None


def dataset_tag(name: str) -> str:
    """A short prefix for the event ids of a data set's rows."""
    return (Path(name).name or name)[-48:]


def interaction_chunks(
    data: InteractionLog, start: int, stop: int, size: int, tag: str
) -> Iterator[list[Interaction]]:
    for lo in range(start, stop, size):
        hi = min(stop, lo + size)
        yield [
            Interaction(
                user_id=data.user_ids[int(data.users[row])],
                item_id=data.item_ids[int(data.items[row])],
                timestamp=float(data.timestamps[row]),
                event_id=f"{tag}:{row}",
            )
            for row in range(lo, hi)
        ]


class DemoLoad:
    def __init__(self, config: LoadConfig, client: Client) -> None:
        self.config = config
        self.client = client

    def run(self) -> list[PeriodMetrics]:
        config = self.config
        if config.period_size < 1:
            raise ValueError("period_size must be at least 1")
        data = load_dataset(config.dataset)
        n_periods = math.ceil(len(data) / config.period_size)
        if config.limit_periods is not None:
            n_periods = min(n_periods, config.limit_periods)
        total = min(len(data), n_periods * config.period_size)
        log.info(
            "replaying %d interactions of %s in %d periods of %d",
            total,
            config.dataset,
            n_periods,
            config.period_size,
        )
        tag = dataset_tag(config.dataset)
        with tqdm(total=total, unit="rows", desc="load", file=sys.stderr) as bar:
            for period in range(n_periods):
                start = period * config.period_size
                stop = min(total, start + config.period_size)
                accepted = 0
                for chunk in interaction_chunks(data, start, stop, config.chunk_size, tag):
                    accepted += self.client.add_interactions(chunk).accepted
                    bar.update(len(chunk))
                self._wait_ingested(accepted)
                job = self._retrain()
                if job is not None:
                    bar.set_postfix(period=period, version=job.model_version)
        return self.metrics()

    def _wait_ingested(self, accepted: int) -> None:
        """Distributed mode stores interactions asynchronously: wait until the open
        period holds what this period posted (or stops growing)."""
        deadline = time.monotonic() + self.config.ingest_timeout_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self._open_count()
            if count >= accepted:
                return
            if count != last:
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > 5.0:
                return
            time.sleep(self.config.poll_s)

    def _open_count(self) -> int:
        return sum(p.n_interactions for p in self.client.periods() if p.status == "open")

    def _retrain(self) -> Job | None:
        for attempt in range(2):
            try:
                queued = self.client.retrain()
            except Conflict as refused:
                detail = str(refused.detail)
                if attempt == 0 and "empty" not in detail:
                    log.warning("retrain refused (%s): waiting for the running job", detail)
                    self._wait_idle()
                    continue
                log.warning("no retrain for this period: %s", detail)
                return None
            except Unavailable as lost:  # no answer: the request may have queued a retrain
                if attempt or lost.status is not None:
                    raise
                log.warning("retrain request unanswered (%s): waiting for any it started", lost)
                self._wait_idle()
                continue
            job = self.client.wait_job(queued.job_id, self.config.job_timeout_s,
                                       self.config.poll_s)
            if job.status == "failed":
                log.error("retrain job %s failed: %s", job.job_id, job.error)
            return job
        return None

    def _wait_idle(self) -> None:
        """Until no closed period waits for its retrain."""
        deadline = time.monotonic() + self.config.job_timeout_s
        while time.monotonic() < deadline:
            if not any(p.status == "closed" for p in self.client.periods()):
                return
            time.sleep(self.config.poll_s)

    def metrics(self) -> list[PeriodMetrics]:
        rows = []
        for model in sorted(self.client.models(), key=lambda m: m.version):
            metrics = model.metrics
            rows.append(
                PeriodMetrics(
                    version=model.version,
                    trained_on=model.period_id,
                    evaluated_on=metrics.evaluated_on_period if metrics else None,
                    strategy=model.strategy,
                    recall=metrics.recall_at_20 if metrics else None,
                    ndcg=metrics.ndcg_at_20 if metrics else None,
                    n_interactions=metrics.n_interactions if metrics else None,
                )
            )
        return rows


def format_report(rows: list[PeriodMetrics]) -> str:
    def text(value: float | int | None) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["version  strategy      trained on  evaluated on  interactions  Recall@20  NDCG@20"]
    for r in rows:
        lines.append(
            f"{r.version:>7}  {r.strategy:<12}  {r.trained_on:>10}  {text(r.evaluated_on):>12}"
            f"  {text(r.n_interactions):>12}  {text(r.recall):>9}  {text(r.ndcg):>7}"
        )
    strategies = dict.fromkeys(r.strategy for r in rows)  # each challenger its own mean
    for strategy in strategies:
        scored = [r for r in rows if r.strategy == strategy and r.recall is not None
                  and r.n_interactions]
        if not scored:
            continue
        weight = sum(int(r.n_interactions or 0) for r in scored)
        recall = sum((r.recall or 0.0) * int(r.n_interactions or 0) for r in scored) / weight
        ndcg = sum((r.ndcg or 0.0) * int(r.n_interactions or 0) for r in scored) / weight
        lines.append(
            f"{strategy}: mean over {len(scored)} evaluated periods: Recall@20 {recall:.4f}, "
            f"NDCG@20 {ndcg:.4f}"
        )
    return "\n".join(lines) + "\n"


def run_load(config: LoadConfig, out: TextIO = sys.stdout) -> list[PeriodMetrics]:
    """Run the demo and write the per-period report to ``out``. A request the service
    refuses, or that stays unanswered through the retries, ends it with LoadError."""
    client = Client(config.url, api_key=config.api_key, admin_token=config.admin_token,
                    timeout=120.0, retry=RETRY)
    try:
        rows = DemoLoad(config, client).run()
    except SmlrecError as error:
        raise LoadError(str(error)) from error
    finally:
        client.close()
    out.write(format_report(rows))
    out.flush()
    return rows
