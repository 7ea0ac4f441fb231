"""Fold-in for users the served model does not know, measured prequentially.

A log is replayed through the worker's own boundary code (``PeriodTrainer``,
SQLite, periods of ``--period-size`` in time order, as ``smlrec load`` replays it
through the service). During period t the service serves the version trained
through t - 1. For every interaction of a user that version does not know (first
seen in period t), after that user's first ``--warmup`` interactions of the
period, the interaction is ranked with what the service would have answered at
that moment: the item among 99 sampled items the user has not interacted with
(the protocol's candidates, items known at the end of t), scored by

- fold-in: a vector fitted to the user's earlier interactions of the period
  (``engine.foldin``), the model's items fixed;
- popularity: the version's popularity list, what the service answered before;
- the item biases alone (what the protocol's online metric scores unknown users by).

The L2 weight of the fold-in is chosen on the first ``--validation`` periods (best
Recall@20) and reported on the later ones, with the paired bootstrap interval of
fold-in minus popularity (users resampled). The cost of one fold-in answer (fit
and top 20 over the catalogue) is timed on a random model of ``--items`` items.

    python -m bench.fold_in [--dataset ml-100k] [--period-size 5000] [--l2 1,3,10,30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.challengers import Replayer, period_rows
from bench.harness import Report, bench_main
from engine.foldin import fit_user, fold_in_top_k, history_seed
from engine.holder import ServingModel
from sml.bootstrap import paired_bootstrap
from sml.metrics import ranks, recall_ndcg
from store import ModelArtifact
from worker.evaluate import N_NEGATIVES, SeenIndex, negatives

K = 20
METHODS = ("fold_in", "popularity", "item_bias")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--period-size", type=int, default=5000)
    parser.add_argument("--periods", type=int, default=20)
    parser.add_argument("--validation", type=int, default=9,
                        help="periods 1..N choose the L2 weight; the later ones report")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--l2", default="1,3,10,30")
    parser.add_argument("--items", type=int, default=100_000, help="catalogue of the cost figure")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


@dataclass
class Hits:
    """Per evaluated interaction: its period and user, and each method's rank."""

    period: list[int] = field(default_factory=list)
    user: list[int] = field(default_factory=list)
    rank: dict[str, list[float]] = field(default_factory=dict)

    def add(self, period: int, user: int, ranked: dict[str, float]) -> None:
        self.period.append(period)
        self.user.append(user)
        for name, value in ranked.items():
            self.rank.setdefault(name, []).append(value)

    def metric(self, name: str, periods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.isin(np.asarray(self.period), periods)
        return recall_ndcg(np.asarray(self.rank[name])[rows], K)


def _scores(model: ModelArtifact, user: np.ndarray | None, cand: np.ndarray) -> np.ndarray:
    """Scores of candidate items: the model's logits for ``user`` (None: the item
    biases alone); items beyond the model's table -inf."""
    item = model.item.numpy()
    inside = cand < len(item)
    rows = item[np.where(inside, cand, 0)]
    out = rows[:, -1].astype(np.float64) + (0.0 if user is None else rows[:, :-1] @ user)
    return np.where(inside, out, -np.inf)


def _popularity(model: ModelArtifact, cand: np.ndarray) -> np.ndarray:
    position = {int(item): len(model.popular) - n for n, item in enumerate(model.popular)}
    return np.asarray([position.get(int(c), -1.0) for c in cand], dtype=np.float64)


def _evaluate_period(
    hits: Hits, model: ModelArtifact, users: np.ndarray, items: np.ndarray, seen: SeenIndex,
    n_items: int, period: int, args: argparse.Namespace, l2s: list[float],
) -> None:
    rng = np.random.default_rng(args.seed + period)
    unknown = users >= len(model.user_ids)
    for u in np.unique(users[unknown]):
        rows = np.flatnonzero(users == u)
        exclude = seen.of(int(u))
        exclude = exclude[exclude < n_items]
        for j in range(args.warmup, len(rows)):
            history = np.unique(items[rows[:j]])
            known = history[history < len(model.item)]
            cand = np.concatenate([[items[rows[j]]],
                                   negatives(rng, n_items, exclude, N_NEGATIVES)])
            ranked = {"popularity": _popularity(model, cand), "item_bias": _scores(model, None,
                                                                                  cand)}
            for l2 in l2s:
                vector = (fit_user(model.item[:, :-1].numpy(), model.item[:, -1].numpy(), known,
                                   l2=l2, seed=history_seed(str(u), known))
                          if len(known) else None)
                ranked[f"fold_in@{l2:g}"] = (_scores(model, vector, cand) if vector is not None
                                             else ranked["popularity"])
            hits.add(period, int(u), {name: float(ranks(s[None, :])[0])
                                      for name, s in ranked.items()})


def _replay(args: argparse.Namespace, l2s: list[float]) -> tuple[Hits, int]:
    periods = period_rows(args.dataset, args.period_size, args.periods)
    hits = Hits()
    with tempfile.TemporaryDirectory() as folder:
        replay = Replayer(Path(folder), "")
        store, artifacts = replay.store, replay.trainer.artifacts
        replay.boundary(periods[0])
        for t, rows in enumerate(periods[1:], start=1):
            info = store.get_version(store.active_version() or 0)
            assert info is not None
            model = ModelArtifact.from_payload(artifacts.load(info.path, info.sha256,
                                                              info.size_bytes))
            store.ingest(rows)
            arrays = store.period_arrays(t)
            history = store.history_arrays(t)
            seen = SeenIndex.build(np.concatenate([history.users, arrays.users]),
                                   np.concatenate([history.items, arrays.items]),
                                   arrays.n_users)
            _evaluate_period(hits, model, arrays.users, arrays.items, seen, arrays.n_items,
                             t, args, l2s)
            closed = store.close_period()
            assert closed is not None
            replay.trainer.run(closed.period_id)
    return hits, len(periods)


def _cost(args: argparse.Namespace, l2: float) -> list[float]:
    """Seconds per fold-in answer (fit and top 20) on a random model of ``--items``."""
    generator = torch.Generator().manual_seed(args.seed)
    artifact = ModelArtifact(
        version=1, period_id=0, strategy="bench", created_at=time.time(),
        user=torch.randn(1, args.dim + 1, generator=generator),
        item=torch.randn(args.items, args.dim + 1, generator=generator) * 0.1,
        user_ids=["u0"], item_ids=[f"i{n}" for n in range(args.items)],
        seen_indptr=np.zeros(2, dtype=np.int64), seen_items=np.zeros(0, dtype=np.int64),
        popular=np.arange(min(1000, args.items), dtype=np.int64))
    model = ServingModel.from_payload(artifact.to_payload(), quantize=False)
    rng = np.random.default_rng(args.seed)
    times = []
    for n in range(args.requests):
        history = rng.integers(0, args.items, size=int(rng.integers(3, 50)))
        started = time.perf_counter()
        fold_in_top_k(model, f"new{n}", history, K, l2=l2, exclude=history)
        times.append(time.perf_counter() - started)
    return times


def _report(report: Report, hits: Hits, n_periods: int, args: argparse.Namespace,
            l2s: list[float]) -> float:
    validation = np.arange(1, args.validation + 1)
    test = np.arange(args.validation + 1, n_periods)
    chosen = max(l2s, key=lambda l2: hits.metric(f"fold_in@{l2:g}", validation)[0].mean())
    report.add("L2 weight chosen on the validation periods (Recall@20)", "-", ", ".join(
        f"{l2:g}: {hits.metric(f'fold_in@{l2:g}', validation)[0].mean():.4f}" for l2 in l2s)
        + f" -> {chosen:g}")
    name = f"fold_in@{chosen:g}"
    users = np.asarray(hits.user)[np.isin(np.asarray(hits.period), test)]
    (fold_r, fold_n), (pop_r, pop_n) = hits.metric(name, test), hits.metric("popularity", test)
    bias_r, bias_n = hits.metric("item_bias", test)
    recall = paired_bootstrap(fold_r, pop_r, users, seed=args.seed)
    ndcg = paired_bootstrap(fold_n, pop_n, users, seed=args.seed)
    gain = fold_r.mean() / pop_r.mean() - 1 if pop_r.mean() else float("nan")
    report.add(f"first-seen users' interactions after their first {args.warmup}, periods "
               f"{test[0]}-{test[-1]} ({len(users):,} interactions, {len(set(users)):,} users): "
               "Recall@20 / NDCG@20", ">= +5% R@20 over popularity",
               f"fold-in {fold_r.mean():.4f} / {fold_n.mean():.4f}, popularity "
               f"{pop_r.mean():.4f} / {pop_n.mean():.4f}, item biases {bias_r.mean():.4f} / "
               f"{bias_n.mean():.4f}; fold-in - popularity R@20 {recall.diff:+.4f} "
               f"[{recall.low:+.4f}, {recall.high:+.4f}], N@20 {ndcg.diff:+.4f} "
               f"[{ndcg.low:+.4f}, {ndcg.high:+.4f}] ({gain:+.1%})", ok=gain >= 0.05)
    return chosen


def run(args: argparse.Namespace) -> Report:
    torch.set_num_threads(args.threads)
    l2s = [float(v) for v in args.l2.split(",")]
    report = Report(f"Fold-in for first-seen users, prequential ({args.dataset}, periods of "
                    f"{args.period_size:,}, SML serving)")
    hits, n_periods = _replay(args, l2s)
    chosen = _report(report, hits, n_periods, args, l2s)
    times = sorted(_cost(args, chosen))
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    report.add(f"one fold-in answer (fit on 3-50 items, top 20 of {args.items:,} x {args.dim}, "
               f"one thread, {len(times)} requests)", "p99 <= 20 ms",
               f"p50 {statistics.median(times) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms",
               ok=p99 <= 0.020)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
