"""The paper's experiments end to end (PROTOCOL.md): ``smlrec replay``.

Periods 0-4 pretrain one plain MF that every method starts from; each method then
walks through periods 5..19. At period t the model it served during t (W_{t-1})
is scored on D_t first, and only then does the method retrain on D_t. SML meta-
trains through the offline periods 5-13 as it goes; validation is 14-15 and test
16-19, so the test figures are those of models 15..18 on periods 16..19.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sml import hyperparameters as hp
from sml.data import InteractionLog, Period, load_dataset, split_equal_count
from sml.fit import SeenPairs, fit_mf
from sml.metrics import (
    METRIC_KEYS,
    Candidates,
    PeriodEvaluation,
    aggregate,
    evaluate_period,
    relative_improvement,
)
from sml.model import MFConfig, MFWeights, numpy_scorer
from sml.registry import ALL_METHODS, make_strategy
from sml.strategy import Strategy, concat_periods

logger = logging.getLogger(__name__)

MAIN_METHODS = ("sml", "full_retrain", "fine_tune", "spmf")
TABLE1_KEYS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


@dataclass(frozen=True)
class Roles:
    """Which periods do what (PROTOCOL.md, "Periods")."""

    n_periods: int = 20
    pretrain: tuple[int, ...] = (0, 1, 2, 3, 4)
    offline: tuple[int, ...] = tuple(range(5, 14))
    validation: tuple[int, ...] = (14, 15)
    test: tuple[int, ...] = (16, 17, 18, 19)

    @property
    def first_online(self) -> int:
        return self.pretrain[-1] + 1


@dataclass(frozen=True)
class ReplayData:
    log: InteractionLog
    periods: list[Period]
    candidates: Candidates
    roles: Roles

    @classmethod
    def prepare(cls, log: InteractionLog, roles: Roles = Roles()) -> ReplayData:
        periods = split_equal_count(log, n_periods=roles.n_periods)
        return cls(log, periods, Candidates.sample(log), roles)


@dataclass
class MethodRun:
    name: str
    hyperparameters: dict[str, Any]
    evaluations: dict[int, PeriodEvaluation] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)  # wall clock
    cpu_seconds: dict[int, float] = field(default_factory=dict)  # this process's CPU time
    offline_seconds: float = 0.0

    def summary(self, periods: Sequence[int], group: str = "all") -> dict[str, float]:
        return aggregate([self.evaluations[p] for p in periods], group)  # type: ignore[arg-type]


def pretrain(data: ReplayData, dim: int, seed: int, hyper: hp.Hyper | None = None) -> MFWeights:
    """The base MF every method starts from: plain MF on the pretraining periods."""
    history = concat_periods([data.periods[p] for p in data.roles.pretrain])
    seen = SeenPairs()
    seen.add(history.users, history.items)
    generator = torch.Generator().manual_seed(seed)
    start = MFWeights.init(MFConfig(dim=dim), history.n_users, history.n_items, generator)
    return fit_mf(
        start,
        history.users,
        history.items,
        seen=seen,
        config=hp.fit_config(hyper or hp.PRETRAIN),
        rng=np.random.default_rng(seed),
    )


def _strategy(name: str, hyper: hp.Hyper, dim: int, seed: int) -> Strategy:
    if name.startswith("sml"):
        return make_strategy(name, dim=dim, seed=seed, sml=hp.sml_config(hyper, dim, seed))
    return make_strategy(name, dim=dim, seed=seed, baseline=hp.baseline_config(hyper, dim, seed))


def run_method(
    name: str,
    data: ReplayData,
    base: MFWeights,
    *,
    hyper: hp.Hyper,
    dim: int = 64,
    seed: int = 0,
    last_period: int | None = None,
    progress: bool = False,
) -> MethodRun:
    """One method through the online periods, scoring each served model before it retrains.

    ``last_period`` stops the walk early (tuning stops at the last validation period,
    so it never sees a test period).
    """
    roles = data.roles
    last = roles.test[-1] if last_period is None else last_period
    history = [data.periods[p] for p in roles.pretrain]
    run = MethodRun(name, hp.resolved(name, hyper, dim, seed))
    strategy = _strategy(name, hyper, dim, seed)
    for _ in range(int(hyper.get("offline_passes", 1)) - 1):
        strategy.warm_start(base, history)
        start = time.perf_counter()
        for p in roles.offline:
            strategy.boundary(data.periods[p])
        run.offline_seconds += time.perf_counter() - start
    strategy.warm_start(base, history)
    online = range(roles.first_online, last + 1)
    for p in tqdm(online, desc=f"{name:>12}", disable=not progress, leave=False):
        if name == "sml_s" and p in roles.test:
            strategy.set_update_transfer(False)
        model = strategy.model
        assert model is not None
        if p > roles.first_online:  # period 5 is scored by the shared base alone
            scorer = numpy_scorer(model, data.log.n_items)
            run.evaluations[p] = evaluate_period(scorer, data.log, data.periods[p], data.candidates)
        start, cpu = time.perf_counter(), time.process_time()
        strategy.boundary(data.periods[p])
        run.seconds[p] = time.perf_counter() - start
        run.cpu_seconds[p] = time.process_time() - cpu
    return run


# -- reporting -----------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "   nan" if math.isnan(x) else f"{x:.4f}"


def table1(runs: dict[str, MethodRun], roles: Roles) -> str:
    keys = (*TABLE1_KEYS, "full_recall@20", "full_ndcg@20")
    sml = runs["sml"].summary(roles.test) if "sml" in runs else None
    head = f"{'method':<14}" + "".join(f"{k:>16}" for k in keys) + f"{'RI':>9}"
    lines = ["Table 1: test periods " + ",".join(map(str, roles.test)), head, "-" * len(head)]
    for name, run in runs.items():
        m = run.summary(roles.test)
        ri = ""
        if sml is not None and name != "sml":
            ri = f"{100 * _mean_ri(sml, m):+8.1f}%"
        lines.append(f"{name:<14}" + "".join(f"{_fmt(m[k]):>16}" for k in keys) + f"{ri:>9}")
    lines.append(
        "RI: relative improvement of SML over the method, averaged over the six sampled metrics."
    )
    return "\n".join(lines)


def _mean_ri(sml: dict[str, float], other: dict[str, float]) -> float:
    return float(np.mean([relative_improvement(sml[k], other[k]) for k in TABLE1_KEYS]))


def breakdown(runs: dict[str, MethodRun], roles: Roles) -> str:
    lines = ["Returning vs first-seen users (test): recall@20 / ndcg@20 / full_recall@20"]
    for name, run in runs.items():
        parts = []
        for group in ("returning", "first_seen"):
            m = run.summary(roles.test, group)
            parts.append(
                f"{group} ({m['share']:.0%}): {_fmt(m['recall@20'])} "
                f"{_fmt(m['ndcg@20'])} {_fmt(m['full_recall@20'])}"
            )
        lines.append(f"{name:<14}" + "   ".join(parts))
    return "\n".join(lines)


def table2(runs: dict[str, MethodRun], roles: Roles) -> str:
    """Retraining seconds per test period: wall clock, and CPU time of this process
    (the steadier figure on a shared machine: other processes do not inflate it)."""
    head = f"{'method':<14}" + "".join(f"{'period ' + str(p):>12}" for p in roles.test)
    head += f"{'mean':>10}{'vs full':>10}"
    lines = ["Table 2: retraining seconds at each test period (same run)"]
    for label, attr in (("wall clock", "seconds"), ("CPU time", "cpu_seconds")):
        lines += [f"{label}:", head, "-" * len(head)]
        full = runs.get("full_retrain")
        full_mean = np.mean([getattr(full, attr)[p] for p in roles.test]) if full else math.nan
        for name, run in runs.items():
            secs = [getattr(run, attr)[p] for p in roles.test]
            ratio = np.mean(secs) / full_mean if full else math.nan
            lines.append(
                f"{name:<14}"
                + "".join(f"{s:>12.3f}" for s in secs)
                + f"{np.mean(secs):>10.3f}{ratio:>10.3f}"
            )
    return "\n".join(lines)


def results_json(
    runs: dict[str, MethodRun], data: ReplayData, dataset: str, seed: int, dim: int
) -> dict[str, Any]:
    roles = data.roles
    methods: dict[str, Any] = {}
    for name, run in runs.items():
        methods[name] = {
            "hyperparameters": run.hyperparameters,
            "validation": _metrics(run.summary(roles.validation)),
            "test": _metrics(run.summary(roles.test)),
            "test_returning": _metrics(run.summary(roles.test, "returning"), share=True),
            "test_first_seen": _metrics(run.summary(roles.test, "first_seen"), share=True),
            "periods": [
                {
                    "period": p,
                    "recall@20": ev.mean()["recall@20"],
                    "ndcg@20": ev.mean()["ndcg@20"],
                    "train_seconds": run.seconds[p],
                }
                for p, ev in sorted(run.evaluations.items())
            ],
            "test_train_seconds": {str(p): run.seconds[p] for p in roles.test},
            "test_train_cpu_seconds": {str(p): run.cpu_seconds[p] for p in roles.test},
            "offline_extra_seconds": run.offline_seconds,
        }
        if name.startswith("sml"):
            methods[name]["transfer_init"] = run.hyperparameters["transfer"]["init"]
    return {
        "protocol": {
            "file": "PROTOCOL.md",
            "n_periods": roles.n_periods,
            "period_size": len(data.periods[0]),
            "pretrain": list(roles.pretrain),
            "offline": list(roles.offline),
            "validation": list(roles.validation),
            "test": list(roles.test),
            "sampled_negatives": data.candidates.n_negatives,
            "candidate_seed": data.candidates.seed,
            "embedding_dim": dim,
            "pretrain_hyperparameters": hp.PRETRAIN,
        },
        "dataset": {
            "name": dataset,
            "interactions": len(data.log),
            "users": data.log.n_users,
            "items": data.log.n_items,
        },
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "methods": methods,
    }


def _metrics(m: dict[str, float], share: bool = False) -> dict[str, float]:
    out = {k: float(m[k]) for k in METRIC_KEYS}
    if share:
        out["share"] = float(m["share"])
    return out


def plot(runs: dict[str, MethodRun], path: Path, roles: Roles) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, run in runs.items():
        ps = sorted(run.evaluations)
        ax.plot(
            ps, [run.evaluations[p].mean()["recall@20"] for p in ps], marker="o", ms=3, label=name
        )
    ax.axvspan(roles.validation[0] - 0.5, roles.validation[-1] + 0.5, color="0.9", zorder=0)
    ax.axvspan(roles.test[0] - 0.5, roles.test[-1] + 0.5, color="0.8", zorder=0)
    ax.set_xlabel("period (model of period t-1 scored on D_t); shaded: validation, test")
    ax.set_ylabel("Recall@20 (sampled, 99 negatives)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smlrec replay", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", default="ml-100k", help="ml-100k, synthetic, or a path to a data file"
    )
    parser.add_argument(
        "--methods",
        default=",".join(MAIN_METHODS),
        help=f"comma-separated, from: {','.join(ALL_METHODS)}",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--hyper", type=Path, help="JSON {method: hyper-parameters} overrides")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        parser.error(f"unknown methods {unknown}; choose from {','.join(ALL_METHODS)}")
    args.methods = methods
    return args


def roles_for(n_rows: int) -> Roles:
    """PROTOCOL.md's roles; a small data set (the synthetic one) gets a scaled-down walk."""
    if n_rows >= 20 * 1000:
        return Roles()
    return Roles(n_periods=8, pretrain=(0, 1), offline=(2, 3), validation=(4, 5), test=(6, 7))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the same seed must give the same numbers: no order-dependent float scatters
    torch.use_deterministic_algorithms(True)
    overrides = json.loads(args.hyper.read_text()) if args.hyper else {}
    log = load_dataset(args.dataset, args.cache_dir)
    data = ReplayData.prepare(log, roles_for(len(log)))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = pretrain(data, args.dim, args.seed)
    runs: dict[str, MethodRun] = {}
    for name in tqdm(args.methods, desc="methods"):
        hyper = {**hp.DEFAULTS[name], **overrides.get(name, {})}
        runs[name] = run_method(
            name, data, base, hyper=hyper, dim=args.dim, seed=args.seed, progress=True
        )
    report = "\n\n".join(
        [table1(runs, data.roles), breakdown(runs, data.roles), table2(runs, data.roles)]
    )
    print(report)
    results = results_json(runs, data, args.dataset, args.seed, args.dim)
    results["wall_seconds"] = time.perf_counter() - start
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.txt").write_text(report + "\n")
    plot(runs, args.out / "recall_per_period.png", data.roles)
    print(
        f"\nwrote {args.out / 'results.json'} and {args.out / 'recall_per_period.png'} "
        f"in {results['wall_seconds']:.0f} s"
    )
    return 0
