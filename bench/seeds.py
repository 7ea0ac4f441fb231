"""Mean and spread over replay runs that differ only in --seed.

    python -m bench.seeds runs/seed0 runs/seed1 runs/seed2

On ML-100K the methods' test figures lie within a few thousandths of each
other, about as far as one method moves between seeds, so one seed's ranking
says little; this prints mean +- standard deviation and how often SML beats
each method on the same seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

KEYS = ("recall@20", "ndcg@20", "full_recall@20", "full_ndcg@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="replay output folders")
    args = parser.parse_args()
    results = [json.loads((run / "results.json").read_text()) for run in args.runs]
    methods = list(results[0]["methods"])
    seeds = [r["seed"] for r in results]
    print(f"test periods, seeds {seeds}: mean +- std")
    print(f"{'method':<14}" + "".join(f"{k:>22}" for k in KEYS) + f"{'SML wins R@20':>15}")
    for name in methods:
        cells = []
        for key in KEYS:
            values = np.array([r["methods"][name]["test"][key] for r in results])
            cells.append(
                f"{values.mean():.4f} +- {values.std(ddof=1) if len(values) > 1 else 0:.4f}"
            )
        wins = ""
        if name != "sml" and "sml" in methods:
            won = sum(
                r["methods"]["sml"]["test"]["recall@20"] > r["methods"][name]["test"]["recall@20"]
                for r in results
            )
            wins = f"{won}/{len(results)}"
        print(f"{name:<14}" + "".join(f"{c:>22}" for c in cells) + f"{wins:>15}")


if __name__ == "__main__":
    main()
