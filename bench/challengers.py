"""What challenger strategies cost the served one: a log replayed through the
worker's own boundary code (``worker.boundary.PeriodTrainer`` on SQLite, the
in-process bus), period by period, by two workers side by side: one with the
served strategy alone, one with challengers. The two run the same boundary one
after the other, so both see the same machine.

Per boundary it measures, from the start of the boundary: when the served
version was announced (the swap replicas act on), the served strategy's own
training time, and when the whole boundary (challengers included) was done.
The swap delay the challengers cause is the paired difference of the two
workers' announcement times, against the served strategy's training time.

    python -m bench.challengers [--dataset ml-100k] [--period-size 5000]
                                [--challengers fine_tune,full_retrain,spmf]
                                [--periods 20] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.harness import Report, bench_main
from sml.readers import load_dataset
from smlrec.settings import Settings
from store import ArtifactStore, InProcessBus, NewInteraction, Store
from store.migrate import upgrade
from worker.boundary import PeriodTrainer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--period-size", type=int, default=5000)
    parser.add_argument("--periods", type=int, default=20, help="at most this many periods")
    parser.add_argument("--challengers", default="fine_tune,full_retrain,spmf")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


@dataclass
class Boundary:
    announced_s: float  # from the start of the boundary to the served version's announcement
    train_s: float  # the served strategy's own training
    total_s: float  # the whole boundary


class Replayer:
    """One worker's boundary code over its own database and model folder."""

    def __init__(self, folder: Path, challengers: str) -> None:
        url = f"sqlite:///{folder / 'bench.db'}"
        upgrade(url)
        settings = Settings(database_url=url, model_dir=folder / "models", period="manual",
                            challengers=challengers, redis_url=None, admin_token="x")
        self.store = Store.from_url(url)
        self.bus = InProcessBus()
        self._announced: dict[int, float] = {}
        self.bus.subscribe_active(self._announce)
        self.trainer = PeriodTrainer(settings, self.store, self.bus,
                                     ArtifactStore(settings.model_dir))
        self.trainer.restore()

    def _announce(self, version: int) -> None:
        self._announced.setdefault(version, time.perf_counter())

    def boundary(self, rows: list[NewInteraction]) -> Boundary:
        self.store.ingest(rows)
        period = self.store.close_period()
        assert period is not None
        started = time.perf_counter()
        result = self.trainer.run(period.period_id)
        total = time.perf_counter() - started
        assert result.version is not None
        info = self.store.get_version(result.version)
        assert info is not None
        return Boundary(self._announced[result.version] - started, info.train_seconds, total)


def period_rows(dataset: str, size: int, periods: int) -> list[list[NewInteraction]]:
    data = load_dataset(dataset)
    out = []
    for p in range(min(periods, len(data) // size)):
        out.append([NewInteraction(data.user_ids[int(data.users[r])],
                                   data.item_ids[int(data.items[r])],
                                   float(data.timestamps[r]), f"e{r}")
                    for r in range(p * size, (p + 1) * size)])
    return out


def run(args: argparse.Namespace) -> Report:
    torch.set_num_threads(args.threads)
    report = Report(f"Challengers beside the served strategy ({args.dataset}, periods of "
                    f"{args.period_size:,}, challengers {args.challengers})")
    periods = period_rows(args.dataset, args.period_size, args.periods)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        alone, beside = Replayer(Path(a), ""), Replayer(Path(b), args.challengers)
        pairs = [(alone.boundary(rows), beside.boundary(rows)) for rows in periods]
        scores = beside.store.strategy_scores()
    later = pairs[1:]  # the first boundary trains from nothing
    delay = [(w.announced_s - s.announced_s) / s.train_s for s, w in later]
    report.add("served swap delayed by challengers, as a share of the served strategy's "
               "training (median over boundaries; paired: same boundary, alone vs beside)",
               "<= 10%", f"{100 * statistics.median(delay):+.1f}% (announced after "
               f"{statistics.median(w.announced_s for _, w in later):.2f} s beside vs "
               f"{statistics.median(s.announced_s for s, _ in later):.2f} s alone; served "
               f"training {statistics.median(s.train_s for s, _ in later):.2f} s)",
               ok=statistics.median(delay) <= 0.10)
    report.add("whole boundary with challengers / alone (median)", "-",
               f"{statistics.median(w.total_s / s.total_s for s, w in later):.2f}x "
               f"({statistics.median(w.total_s for _, w in later):.2f} s vs "
               f"{statistics.median(s.total_s for s, _ in later):.2f} s)")
    by_strategy: dict[str, list[float]] = {}
    for score in scores:
        by_strategy.setdefault(score.strategy, []).append(score.recall)
    evaluated = len({s.period_id for s in scores})
    report.add(f"strategies scored on each of the {evaluated} evaluated periods",
               "every strategy, every period",
               ", ".join(f"{name} {len(r)} (mean Recall@20 {statistics.mean(r):.4f})"
                         for name, r in sorted(by_strategy.items())),
               ok=all(len(r) == evaluated for r in by_strategy.values()))
    report.notes.append("per boundary (announced alone / beside, s): " + ", ".join(
        f"{s.announced_s:.2f}/{w.announced_s:.2f}" for s, w in pairs))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
