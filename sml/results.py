"""The collected runs of a replay and results.json: per method the figures over seeds
(mean, sd), SML's per-seed wins, the paired bootstrap of SML against every other method
and of each transfer's contribution, and the JSON the replay writes.

With several seeds a figure is the mean over seeds; the bootstrap first averages each
test interaction's value over seeds, then resamples users.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sml import hyperparameters as hp
from sml.bootstrap import Interval, paired_bootstrap
from sml.metrics import METRIC_KEYS

if TYPE_CHECKING:
    from sml.metrics import PeriodEvaluation
    from sml.options import Roles
    from sml.replay_data import MethodRun, ReplayData

WIN_KEYS = ("recall@20", "ndcg@20")  # the figures per-seed wins and the bootstrap look at
GROUPS = ("all", "returning")
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Replay:
    """Every run of a replay: seed -> method -> run, all on the same data and periods."""

    data: ReplayData
    runs: dict[int, dict[str, MethodRun]]

    @property
    def seeds(self) -> list[int]:
        return list(self.runs)

    @property
    def methods(self) -> list[str]:
        return list(next(iter(self.runs.values())))

    def of(self, name: str) -> list[MethodRun]:
        """The method's runs, one per seed."""
        return [self.runs[seed][name] for seed in self.seeds]

    def summaries(
        self, name: str, periods: Sequence[int], group: str = "all"
    ) -> list[dict[str, float]]:
        """The method's figures over `periods`, one dict per seed."""
        return [run.summary(periods, group) for run in self.of(name)]

    def mean(self, name: str, periods: Sequence[int], group: str = "all") -> dict[str, float]:
        return mean_summary(self.of(name), periods, group)

    def sd(self, name: str, periods: Sequence[int], group: str = "all") -> dict[str, float]:
        rows = self.summaries(name, periods, group)
        return {key: sd_of([row[key] for row in rows]) for key in METRIC_KEYS}

    def test_values(self, name: str, key: str, fitted: bool = False) -> np.ndarray:
        """(n,) the metric of every test interaction (periods pooled), averaged over seeds:
        of the served models, or (``fitted``) of the W-hat each was merged from."""
        test = self.data.roles.test

        def evaluations(run: MethodRun) -> dict[int, PeriodEvaluation]:
            return run.fitted_evaluations if fitted else run.evaluations

        per_seed = [
            np.concatenate([evaluations(run)[p].values[key] for p in test])
            for run in self.of(name)
        ]
        return np.mean(per_seed, axis=0)

    def merges(self, name: str) -> bool:
        """Whether the method merges a fitted model into the previous one at every test period."""
        test = self.data.roles.test
        return all(all(p in run.fitted_evaluations for p in test) for run in self.of(name))

    def test_users(self) -> np.ndarray:
        return np.concatenate([self.data.periods[p].users for p in self.data.roles.test])

    def test_returning(self) -> np.ndarray:
        run = self.of(self.methods[0])[0]
        return np.concatenate([run.evaluations[p].returning for p in self.data.roles.test])

    def returning_share(self) -> float:
        return self.mean(self.methods[0], self.data.roles.test, "returning")["share"]

    def wins(self, name: str, group: str) -> dict[str, int]:
        """Seeds on which SML's test figure is higher than the method's, per WIN_KEYS."""
        test = self.data.roles.test
        sml, other = self.summaries("sml", test, group), self.summaries(name, test, group)
        return {
            key: sum(a[key] > b[key] for a, b in zip(sml, other, strict=True)) for key in WIN_KEYS
        }

    @cached_property
    def contributions(self) -> dict[str, dict[str, dict[str, Interval]]]:
        """For each merging method (SML and its variants): the served W_t minus the W-hat_t
        it was merged from, on the test interactions: method -> group -> key -> interval.
        A transfer that learns nothing shows here as an interval around 0."""
        return {
            name: self._intervals(
                {key: self.test_values(name, key) for key in WIN_KEYS},
                {key: self.test_values(name, key, fitted=True) for key in WIN_KEYS},
            )
            for name in self.methods
            if self.merges(name)
        }

    @cached_property
    def significance(self) -> dict[str, dict[str, dict[str, Interval]]]:
        """SML minus each other method on the test interactions: method -> group -> key ->
        interval (computed once). Empty when SML is not in the run."""
        if "sml" not in self.methods:
            return {}
        sml = {key: self.test_values("sml", key) for key in WIN_KEYS}
        return {
            name: self._intervals(sml, {key: self.test_values(name, key) for key in WIN_KEYS})
            for name in self.methods
            if name != "sml"
        }

    def _intervals(
        self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]
    ) -> dict[str, dict[str, Interval]]:
        """a - b per test interaction, bootstrapped over users, on all test interactions
        and on returning users' ones: group -> key -> interval."""
        users, returning = self.test_users(), self.test_returning()
        masks = {"all": np.ones_like(returning), "returning": returning}
        return {
            group: {key: _bootstrap(a[key][mask], b[key][mask], users[mask]) for key in WIN_KEYS}
            for group, mask in masks.items()
        }


def _bootstrap(a: np.ndarray, b: np.ndarray, users: np.ndarray) -> Interval:
    return paired_bootstrap(
        a, b, users, draws=BOOTSTRAP_DRAWS, level=BOOTSTRAP_LEVEL, seed=BOOTSTRAP_SEED
    )


def sd_of(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

# -- figures averaged over runs (seeds) -----------------------------------------------------


def mean_summary(
    runs: Sequence[MethodRun], periods: Sequence[int], group: str = "all"
) -> dict[str, float]:
    rows = [run.summary(periods, group) for run in runs]
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def mean_seconds(runs: Sequence[MethodRun], attr: str) -> dict[int, float]:
    """Retraining seconds (`attr`: "seconds" or "cpu_seconds") at each period run."""
    periods = getattr(runs[0], attr)
    return {p: float(np.mean([getattr(run, attr)[p] for run in runs])) for p in periods}


def sum_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    return {key: sum(c.get(key, 0) for c in counts) for key in counts[0]}


def per_period(runs: Sequence[MethodRun], key: str) -> dict[int, float]:
    """The figure of each evaluated period."""
    return {
        p: float(np.mean([run.evaluations[p].mean()[key] for run in runs]))
        for p in sorted(runs[0].evaluations)
    }


# -- results.json ------------------------------------------------------------------------


def _metrics(m: dict[str, float], share: bool = False) -> dict[str, float]:
    out = {k: float(m[k]) for k in METRIC_KEYS}
    if share:
        out["share"] = float(m["share"])
    return out


def _run_figures(runs: Sequence[MethodRun], roles: Roles) -> dict[str, Any]:
    """A method's figures, averaged over the given runs (one run: that run's own)."""
    seconds, cpu = mean_seconds(runs, "seconds"), mean_seconds(runs, "cpu_seconds")
    recall, ndcg = per_period(runs, "recall@20"), per_period(runs, "ndcg@20")
    return {
        "validation": _metrics(mean_summary(runs, roles.validation)),
        "test": _metrics(mean_summary(runs, roles.test)),
        "test_returning": _metrics(mean_summary(runs, roles.test, "returning"), share=True),
        "test_first_seen": _metrics(mean_summary(runs, roles.test, "first_seen"), share=True),
        "periods": [
            {"period": p, "recall@20": recall[p], "ndcg@20": ndcg[p], "train_seconds": seconds[p]}
            for p in recall
        ],
        "test_train_seconds": {str(p): seconds[p] for p in roles.test},
        "test_train_cpu_seconds": {str(p): cpu[p] for p in roles.test},
        "offline_extra_seconds": float(np.mean([run.offline_seconds for run in runs])),
        **({"lineages": sum_counts([run.lineages for run in runs])} if runs[0].lineages else {}),
        **({"theta_lr_selection": [run.selection for run in runs]} if runs[0].selection else {}),
    }


def results_json(
    result: Replay,
    *,
    dataset: str,
    split: str,
    dim: int,
    duplicates_dropped: int | None,
    pretrain: hp.Hyper = hp.PRETRAIN,
) -> dict[str, Any]:
    """Per method: the figures (mean over seeds), their sd, SML's wins, and each seed's own;
    the bootstrap intervals; the protocol, data and seeds that produced them."""
    data, roles = result.data, result.data.roles
    methods: dict[str, Any] = {}
    for name in result.methods:
        runs = result.of(name)
        entry: dict[str, Any] = {"hyperparameters": runs[0].hyperparameters}
        entry.update(_run_figures(runs, roles))
        entry["test_sd"] = result.sd(name, roles.test)
        entry["test_returning_sd"] = result.sd(name, roles.test, "returning")
        if name.startswith("sml"):
            entry["transfer_init"] = runs[0].hyperparameters["transfer"]["init"]
        if name in result.contributions:
            entry["transfer_contribution"] = _intervals_json(result.contributions[name])
        if name != "sml" and "sml" in result.methods:
            entry["sml_wins"] = {group: result.wins(name, group) for group in GROUPS}
        entry["seeds"] = {
            str(seed): _run_figures([run], roles)
            for seed, run in zip(result.seeds, runs, strict=True)
        }
        methods[name] = entry
    return {
        "protocol": _protocol_json(result, split, dim, pretrain),
        "dataset": {
            "name": dataset,
            "interactions": len(data.log),
            "users": data.log.n_users,
            "items": data.log.n_items,
            "duplicates_dropped": duplicates_dropped,
        },
        "seed": result.seeds[0],
        "seeds": result.seeds,
        "torch_threads": torch.get_num_threads(),
        "methods": methods,
        "significance": {
            f"vs_{name}": _intervals_json(by_group)
            for name, by_group in result.significance.items()
        },
    }


def _protocol_json(result: Replay, split: str, dim: int, pretrain: hp.Hyper) -> dict[str, Any]:
    """The protocol that produced the figures: periods and roles, candidates, bootstrap."""
    data, roles = result.data, result.data.roles
    return {
        "file": "docs/protocol.md",
        "split": split,
        "n_periods": roles.n_periods,
        "period_size": len(data.periods[0]),
        "period_sizes": [len(p) for p in data.periods],
        "pretrain": list(roles.pretrain),
        "offline": list(roles.offline),
        "validation": list(roles.validation),
        "test": list(roles.test),
        "sampled_negatives": data.candidates.n_negatives,
        "candidate_seed": data.candidates.seed,
        "embedding_dim": dim,
        "pretrain_hyperparameters": pretrain,
        "bootstrap": {
            "resampled": "users",
            "draws": BOOTSTRAP_DRAWS,
            "level": BOOTSTRAP_LEVEL,
            "seed": BOOTSTRAP_SEED,
            "metrics": list(WIN_KEYS),
        },
    }


def _intervals_json(by_group: dict[str, dict[str, Interval]]) -> dict[str, Any]:
    return {
        group: {key: interval_json(iv) for key, iv in by_key.items()}
        for group, by_key in by_group.items()
    }


def interval_json(iv: Interval) -> dict[str, Any]:
    return {"diff": iv.diff, "low": iv.low, "high": iv.high, "excludes_zero": iv.excludes_zero}


def against_chosen(per_seed: Sequence[Sequence[MethodRun]], chosen: int, data: ReplayData,
                   key: str = "recall@20") -> list[Interval]:
    """Each candidate's figure minus the chosen candidate's on every interaction of the
    validation periods (pooled), averaged over the seeds and bootstrapped over users as
    the test's intervals are; ``per_seed[s][c]`` is seed s's walk of candidate c. An
    interval that holds 0 is a candidate the validation periods do not tell from the
    chosen one (the chosen one's own is 0 [0, 0])."""
    periods = data.roles.validation
    users = np.concatenate([data.periods[p].users for p in periods])

    def values(c: int) -> np.ndarray:
        return np.mean([np.concatenate([runs[c].evaluations[p].values[key] for p in periods])
                        for runs in per_seed], axis=0)

    best = values(chosen)
    return [_bootstrap(values(c), best, users) for c in range(len(per_seed[0]))]


def to_json(results: dict[str, Any]) -> str:
    """Strict JSON: a NaN figure (an empty group) is written as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(results), indent=2, allow_nan=False)

