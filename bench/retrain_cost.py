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
from sml.synthetic import SYNTHETIC_PROFILES, synthetic_drift

# SML-ST: W-hat fit through the transfer, the paper's step 1 (SML's default fits it on its
# own loss, see docs/method.md)
STRATEGIES = ("sml", "sml_st", "full_retrain", "fine_tune")
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
    periods = split_equal_count(synthetic_drift(profile), n_periods=profile.n_periods)
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
    parser.add_argument("--hyper", type=Path, help="the file smlrec tune writes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where to train")
    args = parser.parse_args()
    device = resolve(args.device)
    torch.set_num_threads(args.threads)
    chosen = hp.read_hyper_file(args.hyper, 64).methods if args.hyper else {}
    methods = {name: hp.for_method(name, chosen) for name in STRATEGIES}
    rows = {}
    print(
        f"{'history':>16}{'users':>8}{'items':>8}"
        + "".join(f"{n + ' cpu s':>20}" for n in STRATEGIES)
        + f"{'sml / full':>12}",
        flush=True,
    )
    for h in (int(x) for x in args.history.split(",")):
        figures = measure(h, methods, device=device)
        rows[h] = figures
        ratio = figures["sml"]["cpu_s"] / figures["full_retrain"]["cpu_s"]
        shape = figures["_shape"]
        print(
            f"{h:>9,} inter.{int(shape['users']):>8}{int(shape['items']):>8}"
            + "".join(f"{figures[n]['cpu_s']:>20.3f}" for n in STRATEGIES)
            + f"{ratio:>12.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"threads": args.threads, "device": device, "hyper": methods,
                 "by_history": rows}, indent=2
            )
        )


if __name__ == "__main__":
    main()
