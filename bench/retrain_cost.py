"""What one retrain costs as history grows: SML against full-retrain and fine-tune.

SML trains on the new period (and, for Theta, the one before it) whatever the
history; full-retrain trains on all of it. On MovieLens-100K the history at a
test period is only 16-19 periods long, so this benchmark grows it on the
synthetic drift data (periods of 5,000 interactions) and times one period
boundary of each strategy, with the replay-tuned hyper-parameters, in CPU time
of this process (steady on a shared machine) and wall-clock time.

    python -m bench.retrain_cost [--history 4,20,40] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sml.data import SyntheticConfig, split_equal_count, synthetic_drift
from sml.model import MFConfig, MFWeights
from sml.registry import make_strategy
from sml.strategy import concat_periods

STRATEGIES = ("sml", "full_retrain", "fine_tune")


def measure(history_periods: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """One boundary of each strategy after ``history_periods`` periods of history."""
    config = SyntheticConfig(
        n_periods=history_periods + 1,
        interactions_per_period=5000,
        n_users_initial=2000,
        n_items_initial=3000,
        new_users_per_period=100,
        new_items_per_period=50,
        seed=seed,
    )
    periods = split_equal_count(synthetic_drift(config), n_periods=config.n_periods)
    history, new = periods[:-1], periods[-1]
    shape = concat_periods(history)
    base = MFWeights.init(MFConfig(), shape.n_users, shape.n_items, torch.Generator())
    out: dict[str, dict[str, float]] = {}
    for name in STRATEGIES:
        strategy = make_strategy(name, seed=seed)
        strategy.warm_start(base, history)
        wall, cpu = time.perf_counter(), time.process_time()
        strategy.boundary(new)
        out[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", default="4,20,40", help="history lengths, in periods")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    print(
        f"{'history':>16}"
        + "".join(f"{n + ' cpu s':>20}" for n in STRATEGIES)
        + f"{'sml / full':>12}"
    )
    for h in (int(x) for x in args.history.split(",")):
        figures = measure(h)
        rows[h] = figures
        ratio = figures["sml"]["cpu_s"] / figures["full_retrain"]["cpu_s"]
        print(
            f"{h * 5000:>9} inter."
            + "".join(f"{figures[n]['cpu_s']:>20.3f}" for n in STRATEGIES)
            + f"{ratio:>12.3f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "by_history_periods": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
