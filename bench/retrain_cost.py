"""What one retrain costs as history grows: SML (and SML-ST) against full-retrain and fine-tune.

SML trains on the new period (and, for Theta, the one before it) whatever the
history; full-retrain trains on all of it. On MovieLens-100K the history at a
test period is only 16-19 periods long, so this benchmark grows it on synthetic
data (the synthetic-returning profile's users and topics, periods of 5,000
interactions, new users and items every period) and times one period boundary
of each strategy after that much history, in CPU time of this process (steady
on a shared machine) and wall-clock time.

    python -m bench.retrain_cost [--history 20000,100000,400000,1000000,2000000]
                                 [--hyper hyper.json] [--threads 1] [--json out.json]
                                 [--device cpu|cuda|auto]
    python -m bench.retrain_cost --profile synthetic-yelp [--hyper bench/rows_only.json]

``--profile`` times instead the last boundary of a named synthetic log's own periods
(``synthetic-yelp``: Yelp's size, 40 periods of 75,000), every earlier period being
the history: SML with Theta learning (its default step-2 rate) and with Theta frozen
(``sml_frozen``: what SML costs where its validation periods chose rate 0), fine-tune
and full-retrain. A replay's Table 2 gives the same figure with trained models; this
gives it in minutes instead of hours.

On a GPU (``--device cuda``) compare the wall-clock seconds: CPU time then counts
only the host's share of the work.

``--hyper`` takes the file ``smlrec tune`` writes (or {method: overrides}); without
it every strategy runs with its defaults (``sml.hyperparameters``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from sml import hyperparameters as hp
from sml.data import split_equal_count
from sml.device import DEVICES, resolve
from sml.model import MFConfig, MFWeights
from sml.registry import from_hyper
from sml.strategy import concat_periods
from sml.synthetic import SYNTHETIC_PROFILES, SyntheticConfig, synthetic_drift

# SML-ST: W-hat fit through the transfer, the paper's step 1 (SML's default fits it on its
# own loss, see docs/method.md)
STRATEGIES = ("sml", "sml_st", "full_retrain", "fine_tune")
PROFILE_STRATEGIES = ("sml", "sml_frozen", "full_retrain", "fine_tune")
PERIOD = 5000


def measure(
    history: int, methods: dict[str, hp.Hyper], dim: int = 64, seed: int = 0,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """One boundary of each strategy after ``history`` interactions (whole periods)."""
    n_history = max(1, history // PERIOD)
    profile = dataclasses.replace(
        SYNTHETIC_PROFILES["synthetic-returning"],
        n_periods=n_history + 1,
        interactions_per_period=PERIOD,
        seed=seed,
    )
    return _last_boundary(_periods(profile), methods, dim=dim, seed=seed, device=device)


def measure_profile(
    name: str, methods: dict[str, hp.Hyper], dim: int = 64, seed: int = 0, device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """The last boundary of the named synthetic log, after all of its earlier periods."""
    profile = dataclasses.replace(SYNTHETIC_PROFILES[name], seed=seed)
    return _last_boundary(_periods(profile), methods, dim=dim, seed=seed, device=device)


def _periods(profile: SyntheticConfig) -> list:
    """The profile's log in its equal-count periods."""
    return split_equal_count(synthetic_drift(profile), n_periods=profile.n_periods)


def _last_boundary(
    periods: list, methods: dict[str, hp.Hyper], *, dim: int, seed: int, device: str
) -> dict[str, dict[str, float]]:
    past, new = periods[:-1], periods[-1]
    shape = concat_periods(past)
    base = MFWeights.init(MFConfig(dim=dim), shape.n_users, shape.n_items, torch.Generator())
    out: dict[str, dict[str, float]] = {
        "_shape": {"users": float(new.n_users), "items": float(new.n_items)}
    }
    for name, hyper in methods.items():
        strategy = from_hyper(name, hyper, dim=dim, seed=seed, device=device)
        # warm start on all but the last past period, then one boundary on it, so that
        # SML holds a previous model and a fit and runs its whole boundary (meta step too)
        strategy.warm_start(base, past[:-1] or past)
        strategy.boundary(past[-1])
        wall, cpu = time.perf_counter(), time.process_time()
        strategy.boundary(new)
        out[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--history",
        default="20000,100000,400000,1000000,2000000",
        help="history lengths, in interactions (whole periods of 5,000)",
    )
    parser.add_argument(
        "--profile", choices=sorted(SYNTHETIC_PROFILES),
        help="time the last boundary of this synthetic log instead (e.g. synthetic-yelp)",
    )
    parser.add_argument("--hyper", type=Path, help="the file smlrec tune writes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where to train")
    args = parser.parse_args()
    device = resolve(args.device)
    torch.set_num_threads(args.threads)
    chosen = hp.read_hyper_file(args.hyper, 64).methods if args.hyper else {}
    names = PROFILE_STRATEGIES if args.profile else STRATEGIES
    methods = {name: hp.for_method(name, chosen) for name in names}
    print(
        f"{'history' if not args.profile else 'log':>16}{'users':>8}{'items':>8}"
        + "".join(f"{n + ' cpu s':>20}" for n in names)
        + f"{'sml / full':>12}",
        flush=True,
    )
    rows = {}
    if args.profile:
        rows[args.profile] = _print_row(
            args.profile, measure_profile(args.profile, methods, device=device), names)
    else:
        for h in (int(x) for x in args.history.split(",")):
            rows[str(h)] = _print_row(f"{h:>9,} inter.", measure(h, methods, device=device),
                                      names)
    if args.json:
        key = "by_profile" if args.profile else "by_history"
        args.json.write_text(
            json.dumps(
                {"threads": args.threads, "device": device, "hyper": methods, key: rows},
                indent=2,
            )
        )


def _print_row(label: str, figures: dict[str, dict[str, float]], names: tuple[str, ...]
               ) -> dict[str, dict[str, float]]:
    ratio = figures["sml"]["cpu_s"] / figures["full_retrain"]["cpu_s"]
    shape = figures["_shape"]
    print(
        f"{label:>16}{int(shape['users']):>8}{int(shape['items']):>8}"
        + "".join(f"{figures[n]['cpu_s']:>20.3f}" for n in names)
        + f"{ratio:>12.3f}",
        flush=True,
    )
    return figures


if __name__ == "__main__":
    main()
