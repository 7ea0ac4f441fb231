"""What a replay prints and writes: Table 1 over all test interactions and over returning
users' ones, the returning / first-seen breakdown, per-seed figures and SML's wins, the
paired bootstrap of SML against every other method, Table 2, results.json and the plot.

With several seeds a figure is the mean over seeds (+- their standard deviation); the
bootstrap first averages each test interaction's value over seeds, then resamples users.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sml import hyperparameters as hp
from sml.bootstrap import Interval, paired_bootstrap
from sml.metrics import METRIC_KEYS, relative_improvement

if TYPE_CHECKING:
    from sml.metrics import PeriodEvaluation
    from sml.options import Roles
    from sml.replay import MethodRun, ReplayData

TABLE1_KEYS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")
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
        return _mean_summary(self.of(name), periods, group)

    def sd(self, name: str, periods: Sequence[int], group: str = "all") -> dict[str, float]:
        rows = self.summaries(name, periods, group)
        return {key: _sd([row[key] for row in rows]) for key in METRIC_KEYS}

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


# -- text ------------------------------------------------------------------------------


def header(
    data: ReplayData, dataset: str, split: str, seeds: Sequence[int], dedupe: bool, dropped: int
) -> str:
    """What is being replayed: the data, its periods and roles, the candidates, the seeds."""
    log, roles = data.log, data.roles
    sizes = sorted({len(p) for p in data.periods})
    size = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}-{sizes[-1]:,}"
    lines = [
        f"data: {dataset}, {len(log):,} interactions, {log.n_users:,} users, "
        f"{log.n_items:,} items"
        + (f" (--dedupe dropped {dropped:,} repeated user-item rows)" if dedupe else ""),
        f"periods: {roles.n_periods} by --split {split}, {size} interactions each; "
        f"{roles.describe()}",
        f"candidates: {data.candidates.n_negatives} sampled negatives per interaction "
        f"(seed {data.candidates.seed}); seeds {', '.join(map(str, seeds))}",
    ]
    return "\n".join(lines)


def render(result: Replay) -> str:
    """Every table of the replay, in the order they are printed."""
    parts = [table1(result, "all"), table1(result, "returning"), breakdown(result)]
    if len(result.seeds) > 1:
        parts.append(seeds_table(result))
    if result.significance:
        parts.append(significance_table(result))
    if result.contributions:
        parts.append(contribution_table(result))
    parts.append(table2(result))
    return "\n\n".join(parts)


def _fmt(x: float) -> str:
    return "   nan" if math.isnan(x) else f"{x:.4f}"


def _sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(values: Sequence[float]) -> str:
    """One figure, or mean +- sd over seeds."""
    if len(values) == 1:
        return _fmt(values[0])
    return f"{_fmt(float(np.mean(values)))}+-{_fmt(_sd(values))}"


def _periods(periods: Sequence[int]) -> str:
    return f"{periods[0]}-{periods[-1]}" if len(periods) > 1 else str(periods[0])


def table1(result: Replay, group: str = "all") -> str:
    """The paper's Table 1 on every test interaction, or on returning users' ones."""
    roles = result.data.roles
    keys = (*TABLE1_KEYS, "full_recall@20", "full_ndcg@20")
    sml = result.mean("sml", roles.test, group) if "sml" in result.methods else None
    head = f"{'method':<14}" + "".join(f"{k:>16}" for k in keys) + f"{'RI':>9}"
    if group == "all":
        title = f"Table 1: test periods {_periods(roles.test)}"
    else:
        title = (
            f"Table 1, returning users: test interactions of users seen in an earlier period "
            f"({result.returning_share():.1%} of them)"
        )
    if len(result.seeds) > 1:
        title += f"; mean +- sd over seeds {', '.join(map(str, result.seeds))}"
    lines = [title, head, "-" * len(head)]
    for name in result.methods:
        rows = result.summaries(name, roles.test, group)
        ri = ""
        if sml is not None and name != "sml":
            ri = f"{100 * _mean_ri(sml, result.mean(name, roles.test, group)):+8.1f}%"
        cells = "".join(f"{_cell([row[k] for row in rows]):>16}" for k in keys)
        lines.append(f"{name:<14}{cells}{ri:>9}")
    if group == "all":
        lines.append(
            "RI: relative improvement of SML over the method, averaged over the six sampled "
            "metrics."
        )
    return "\n".join(lines)


def _mean_ri(sml: dict[str, float], other: dict[str, float]) -> float:
    return float(np.mean([relative_improvement(sml[k], other[k]) for k in TABLE1_KEYS]))


def breakdown(result: Replay) -> str:
    test = result.data.roles.test
    lines = ["Returning vs first-seen users (test): recall@20 / ndcg@20 / full_recall@20"]
    for name in result.methods:
        parts = []
        for group in ("returning", "first_seen"):
            m = result.mean(name, test, group)
            parts.append(
                f"{group} ({m['share']:.0%}): {_fmt(m['recall@20'])} "
                f"{_fmt(m['ndcg@20'])} {_fmt(m['full_recall@20'])}"
            )
        lines.append(f"{name:<14}" + "   ".join(parts))
    return "\n".join(lines)


def seeds_table(result: Replay) -> str:
    """Each seed's test recall@20 and ndcg@20, and on how many seeds SML scores higher."""
    test, seeds = result.data.roles.test, result.seeds
    lines = [
        "Per seed (test): R@20 = recall@20, N@20 = ndcg@20 of each seed (s0 = seed 0, ...); "
        "SML wins: on how many seeds SML's figure is higher than the method's"
    ]
    for group in GROUPS:
        label = "all interactions" if group == "all" else "returning users"
        lines.append(f"{label}:")
        head = f"{'method':<14}" + "".join(
            f"{f'{k[0].upper()}@20 s{seed}':>10}" for k in WIN_KEYS for seed in seeds
        )
        head += "".join(f"{f'SML wins {k[0].upper()}@20':>16}" for k in WIN_KEYS)
        lines += [head, "-" * len(head)]
        for name in result.methods:
            rows = result.summaries(name, test, group)
            cells = "".join(f"{_fmt(row[k]):>10}" for k in WIN_KEYS for row in rows)
            if name != "sml" and "sml" in result.methods:
                won = result.wins(name, group)
                cells += "".join(f"{f'{won[k]}/{len(seeds)}':>16}" for k in WIN_KEYS)
            lines.append(f"{name:<14}{cells}")
    return "\n".join(lines)


def significance_table(result: Replay) -> str:
    """SML minus each method, with the bootstrap interval; * where it excludes 0."""
    seeds = result.seeds
    averaged = f", each interaction averaged over {len(seeds)} seeds" if len(seeds) > 1 else ""
    title = f"Paired bootstrap: SML minus the method on the test interactions{averaged};"
    return _interval_table(result, title, "vs", result.significance)


def contribution_table(result: Replay) -> str:
    """The merge's own effect: each merging method's served W_t minus its W-hat_t, and
    how often a learned Theta was adopted."""
    title = (
        "The transfer's own contribution: the served W_t minus the W-hat_t it was merged "
        "from, on the test interactions;"
    )
    lines = [_interval_table(result, title, "method", result.contributions)]
    lines.append(
        "(Theta reaches W-hat too: W-hat_t starts from the merged W_{t-1}, which the meta "
        "step merges again with the new Theta, and with step_one=transfer it is fit through "
        "f; SML against sml_frozen, where Theta is never trained, measures all that learning "
        "the transfer adds)"
    )
    for name in result.methods:
        chosen = [run.selection for run in result.of(name) if run.selection]
        if chosen:
            lines.append(f"{name}: step-1 fit and step-2 learning rate chosen on validation "
                         f"periods {','.join(map(str, chosen[0]['periods']))} (recall@20), "
                         "per seed: " + "; ".join(_selection_line(c) for c in chosen))
    for name in result.contributions:
        counts = [run.lineages for run in result.of(name) if run.lineages]
        total = _sum_counts(counts) if counts else {}
        compared = total.get("promotions", 0) + total.get("rejections", 0)
        if compared:
            lines.append(
                f"{name}: the learner's Theta was adopted at {total['promotions']} of "
                f"{compared} boundaries where the two lineages differed (all seeds)"
            )
    return "\n".join(lines)


def _selection_line(selection: dict[str, Any]) -> str:
    """What was chosen and each candidate's validation Recall@20, e.g.
    ``own lr 1e-05 of own lr 0 0.5919, own lr 1e-05 0.5943, fine_tune lr 0 0.5901``."""
    chosen = {k.removeprefix("chosen_"): v for k, v in selection.items() if k.startswith("chosen_")}
    tried = ", ".join(f"{_candidate(c)} {c['recall@20']:.4f}" for c in selection["candidates"])
    return f"{_candidate(chosen)} of {tried}"


def _candidate(label: dict[str, Any]) -> str:
    parts = [str(label["fit"])] if "fit" in label else []
    if "lr" in label:
        parts.append(f"lr {label['lr']:g}")
    return " ".join(parts)


def _interval_table(
    result: Replay, title: str, label: str, rows: dict[str, dict[str, dict[str, Interval]]]
) -> str:
    lines = [
        title,
        f"difference [{BOOTSTRAP_LEVEL:.0%} interval] from {BOOTSTRAP_DRAWS:,} draws of users "
        "with replacement (* the interval excludes 0)",
        f"{'':<14}{'all interactions':^56}"
        f"{f'returning users ({result.returning_share():.0%})':^56}",
        f"{label:<14}" + "".join(f"{key:^28}" for _ in GROUPS for key in WIN_KEYS),
    ]
    lines.append("-" * len(lines[-1]))
    for name, by_group in rows.items():
        cells = []
        for group in GROUPS:
            for key in WIN_KEYS:
                iv = by_group[group][key]
                mark = "*" if iv.excludes_zero else " "
                cells.append(f"{iv.diff:+.4f} [{iv.low:+.4f},{iv.high:+.4f}]{mark}")
        lines.append(f"{name:<14}" + "".join(f"{c:^28}" for c in cells))
    return "\n".join(lines)


def table2(result: Replay) -> str:
    """Retraining seconds per test period: wall clock, and CPU time of this process
    (the steadier figure on a shared machine: other processes do not inflate it)."""
    test = result.data.roles.test
    head = f"{'method':<14}" + "".join(f"{'period ' + str(p):>12}" for p in test)
    head += f"{'mean':>10}{'vs full':>10}"
    title = "Table 2: retraining seconds at each test period (same run"
    title += f"; mean over {len(result.seeds)} seeds)" if len(result.seeds) > 1 else ")"
    lines = [title]
    for label, attr in (("wall clock", "seconds"), ("CPU time", "cpu_seconds")):
        lines += [f"{label}:", head, "-" * len(head)]
        seconds = {name: _mean_seconds(result.of(name), attr) for name in result.methods}
        means = {name: float(np.mean([secs[p] for p in test])) for name, secs in seconds.items()}
        full_mean = means.get("full_retrain", math.nan)
        for name, secs in seconds.items():
            mean = means[name]
            lines.append(
                f"{name:<14}"
                + "".join(f"{secs[p]:>12.3f}" for p in test)
                + f"{mean:>10.3f}{mean / full_mean:>10.3f}"
            )
    return "\n".join(lines)


# -- figures averaged over runs (seeds) -----------------------------------------------------


def _mean_summary(
    runs: Sequence[MethodRun], periods: Sequence[int], group: str = "all"
) -> dict[str, float]:
    rows = [run.summary(periods, group) for run in runs]
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def _mean_seconds(runs: Sequence[MethodRun], attr: str) -> dict[int, float]:
    """Retraining seconds (`attr`: "seconds" or "cpu_seconds") at each period run."""
    periods = getattr(runs[0], attr)
    return {p: float(np.mean([getattr(run, attr)[p] for run in runs])) for p in periods}


def _sum_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    return {key: sum(c.get(key, 0) for c in counts) for key in counts[0]}


def _per_period(runs: Sequence[MethodRun], key: str) -> dict[int, float]:
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
    seconds, cpu = _mean_seconds(runs, "seconds"), _mean_seconds(runs, "cpu_seconds")
    recall, ndcg = _per_period(runs, "recall@20"), _per_period(runs, "ndcg@20")
    return {
        "validation": _metrics(_mean_summary(runs, roles.validation)),
        "test": _metrics(_mean_summary(runs, roles.test)),
        "test_returning": _metrics(_mean_summary(runs, roles.test, "returning"), share=True),
        "test_first_seen": _metrics(_mean_summary(runs, roles.test, "first_seen"), share=True),
        "periods": [
            {"period": p, "recall@20": recall[p], "ndcg@20": ndcg[p], "train_seconds": seconds[p]}
            for p in recall
        ],
        "test_train_seconds": {str(p): seconds[p] for p in roles.test},
        "test_train_cpu_seconds": {str(p): cpu[p] for p in roles.test},
        "offline_extra_seconds": float(np.mean([run.offline_seconds for run in runs])),
        **({"lineages": _sum_counts([run.lineages for run in runs])} if runs[0].lineages else {}),
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
        "protocol": {
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
        },
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


def _intervals_json(by_group: dict[str, dict[str, Interval]]) -> dict[str, Any]:
    return {
        group: {
            key: {
                "diff": iv.diff,
                "low": iv.low,
                "high": iv.high,
                "excludes_zero": iv.excludes_zero,
            }
            for key, iv in by_key.items()
        }
        for group, by_key in by_group.items()
    }


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


def plot(result: Replay, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = result.data.roles
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name in result.methods:
        recall = _per_period(result.of(name), "recall@20")
        ax.plot(list(recall), list(recall.values()), marker="o", ms=3, label=name)
    ax.axvspan(roles.validation[0] - 0.5, roles.validation[-1] + 0.5, color="0.9", zorder=0)
    ax.axvspan(roles.test[0] - 0.5, roles.test[-1] + 0.5, color="0.8", zorder=0)
    ax.set_xlabel("period (model of period t-1 scored on D_t); shaded: validation, test")
    seeds = f", mean of {len(result.seeds)} seeds" if len(result.seeds) > 1 else ""
    n_neg = result.data.candidates.n_negatives
    ax.set_ylabel(f"Recall@20 (sampled, {n_neg} negatives{seeds})")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
