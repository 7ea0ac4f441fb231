"""Choose each replay method's hyper-parameters on the validation periods only.

Every candidate runs through period 15 (the last validation period) and stops:
the test periods 16-19 are never trained on or scored here. The winner is the
candidate with the best validation Recall@20 (NDCG@20 breaks ties).

    python -m bench.tune --methods fine_tune,full_retrain,spmf --out runs/tune
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from sml import hyperparameters as hp
from sml.data import load_dataset
from sml.replay import ReplayData, pretrain, run_method

logger = logging.getLogger("bench.tune")

FIT_GRID: dict[str, list[Any]] = {
    "epochs": [5, 10, 20],
    "lr": [0.005, 0.01],
    "l2": [1e-4, 1e-3],
    "n_negatives": [1, 4],
}
GRIDS: dict[str, list[hp.Hyper]] = {
    "fine_tune": [
        {"fit": dict(zip(FIT_GRID, v, strict=True))} for v in itertools.product(*FIT_GRID.values())
    ],
    "spmf": [
        {"fit": dict(zip(FIT_GRID, v, strict=True)), "reservoir_size": r}
        for v in itertools.product(*FIT_GRID.values())
        for r in (5_000, 20_000)
    ],
    "full_retrain": [
        {"fit": {"epochs": e, "lr": lr, "l2": l2, "n_negatives": n}}
        for e in (3, 10)
        for lr in (0.005, 0.01)
        for l2 in (1e-4, 1e-3)
        for n in (1, 4)
    ],
    "sml": [
        {
            "fit": {"epochs": e, "lr": 0.01, "l2": l2, "n_negatives": 1, "batch_size": b},
            "meta": {"rounds": 1, "epochs": me, "lr": mlr, "l2": 1e-4, "batch_size": b},
            "transfer": {"kind": "cnn", "init": "fine_tune"},
        }
        for e in (3, 5, 10)
        for l2 in (1e-4, 1e-3)
        for b in (1024, 4096)
        for me, mlr in ((1, 1e-4), (1, 3e-4), (3, 1e-4))
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="fine_tune,full_retrain,spmf,sml")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--out", type=Path, default=Path("runs/tune"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="first N candidates only")
    parser.add_argument("--grid", type=Path, help="JSON list of candidates (one method only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = ReplayData.prepare(load_dataset(args.dataset))
    last_validation = data.roles.validation[-1]
    base = pretrain(data, 64, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        rows: list[dict[str, Any]] = []
        grid = json.loads(args.grid.read_text()) if args.grid else GRIDS[method]
        for hyper in grid[: args.limit]:
            start = time.perf_counter()
            run = run_method(
                method, data, base, hyper=hyper, seed=args.seed, last_period=last_validation
            )
            val = run.summary(data.roles.validation)
            rows.append(
                {
                    "hyper": hyper,
                    "recall@20": val["recall@20"],
                    "ndcg@20": val["ndcg@20"],
                    "seconds": time.perf_counter() - start,
                }
            )
            logger.info(
                "%s %s R@20=%.4f N@20=%.4f (%.0fs)",
                method,
                json.dumps(hyper),
                val["recall@20"],
                val["ndcg@20"],
                rows[-1]["seconds"],
            )
            rows.sort(key=lambda r: (r["recall@20"], r["ndcg@20"]), reverse=True)
            (args.out / f"{method}.json").write_text(json.dumps(rows, indent=1))
        logger.info("%s best: %s", method, json.dumps(rows[0]))


if __name__ == "__main__":
    main()
