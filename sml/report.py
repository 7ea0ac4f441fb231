"""What a replay prints: Table 1 over all test interactions and over returning users'
ones, the returning / first-seen breakdown, per-seed figures and SML's wins, the paired
bootstrap of SML against every other method, Table 2, and the plot (the figures
themselves and results.json: :mod:`sml.results`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sml.bootstrap import Interval
from sml.metrics import relative_improvement
from sml.results import (
    BOOTSTRAP_DRAWS,
    BOOTSTRAP_LEVEL,
    GROUPS,
    WIN_KEYS,
    Replay,
    mean_seconds,
    per_period,
    sd_of,
    sum_counts,
)

if TYPE_CHECKING:
    from sml.replay_data import ReplayData

TABLE1_KEYS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


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



def _cell(values: Sequence[float]) -> str:
    """One figure, or mean +- sd over seeds."""
    if len(values) == 1:
        return _fmt(values[0])
    return f"{_fmt(float(np.mean(values)))}+-{_fmt(sd_of(values))}"


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
            by = chosen[0].get("by", "validation recall@20").removeprefix("validation ")
            lines.append(f"{name}: step-1 fit, window, history and step-2 rate chosen on "
                         f"validation periods {','.join(map(str, chosen[0]['periods']))} ({by}), "
                         "per seed: " + "; ".join(_selection_line(c) for c in chosen))
            noise = _noise_line(name, chosen[0])
            if noise:
                lines.append(noise)
    for name in result.contributions:
        counts = [run.lineages for run in result.of(name) if run.lineages]
        total = sum_counts(counts) if counts else {}
        compared = total.get("promotions", 0) + total.get("rejections", 0)
        if compared:
            lines.append(
                f"{name}: the learner's Theta was adopted at {total['promotions']} of "
                f"{compared} boundaries where the two lineages differed (all seeds)"
            )
    return "\n".join(lines)


def _selection_line(selection: dict[str, Any]) -> str:
    """What was chosen and each candidate's validation Recall@20, e.g.
    ``own 2 periods lr 1e-05 of own 1 period lr 0 0.5919, own 2 periods lr 1e-05 0.5943``."""
    chosen = {k.removeprefix("chosen_"): v for k, v in selection.items() if k.startswith("chosen_")}
    tried = ", ".join(f"{_candidate(c)} {c['recall@20']:.4f}" for c in selection["candidates"])
    return f"{_candidate(chosen)} of {tried}"


def _noise_line(name: str, selection: dict[str, Any]) -> str | None:
    """How many candidates the validation periods cannot tell from the chosen one (the
    paired bootstrap of their Recall@20 difference, seeds averaged, holds 0)."""
    gaps = [c["recall@20_vs_chosen"] for c in selection["candidates"]
            if "recall@20_vs_chosen" in c]
    if len(gaps) < 2:
        return None
    close = sum(not g["excludes_zero"] for g in gaps) - 1  # the chosen one's own holds 0
    return (f"{name}: {close} of {len(gaps) - 1} other candidates within the validation noise "
            "of the chosen one (the 95% interval of their Recall@20 difference holds 0)")


def _candidate(label: dict[str, Any]) -> str:
    parts = [str(label["fit"])] if "fit" in label else []
    if "window" in label:
        parts.append(f"{label['window']} period{'s' if label['window'] > 1 else ''}")
    if label.get("history"):
        parts.append(f"+ history x{label['history']:g}")
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
        seconds = {name: mean_seconds(result.of(name), attr) for name in result.methods}
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


def plot(result: Replay, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = result.data.roles
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name in result.methods:
        recall = per_period(result.of(name), "recall@20")
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
