"""The best Recall@20 and NDCG@20 a synthetic log allows, on the replay's own periods and
candidates: how far every method is from what could be gained.

A synthetic log's generator knows each user's interests and each item's topic and
weight (:mod:`sml.ceiling`); ranking the protocol's candidates by it, knowing more or
less of the user, gives the ceilings a model's figures are read against. Same data
options as the replay, so the periods, roles and negatives are the replay's.

    python -m bench.ceiling --dataset synthetic-returning [--negatives 99] [--score online]
                            [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sml.ceiling import KNOWLEDGE, ceiling_scores
from sml.metrics import _returning, ranks, recall_ndcg
from sml.options import OneLineParser, UsageError, add_data_arguments, check_data_arguments, plan
from sml.replay_data import SCORE_CHOICES, ReplayData
from sml.synthetic import SYNTHETIC_PROFILES, synthetic_drift_with_truth

K = 20


def measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """{role: {knowledge: {"recall", "ndcg", "returning_recall", "returning_ndcg"}}}
    over the validation and test periods the data options make."""
    if args.dataset not in SYNTHETIC_PROFILES:
        raise UsageError(f"--dataset: {args.dataset} is no synthetic profile "
                         f"({', '.join(SYNTHETIC_PROFILES)}); only they know their truth")
    log, truth = synthetic_drift_with_truth(SYNTHETIC_PROFILES[args.dataset])
    periods, roles = plan(log, args)
    data = ReplayData.prepare(log, roles, periods=periods, n_negatives=args.negatives,
                              score=args.score)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for role, which in (("validation", roles.validation), ("test", roles.test)):
        out[role] = {}
        for knows in KNOWLEDGE:
            recall, ndcg, back = [], [], []
            for p in which:
                period = data.periods[p]
                rank = ranks(ceiling_scores(log, truth, data.candidates, period.start,
                                            period.stop, knows))
                r, n = recall_ndcg(rank, K)
                recall.append(r)
                ndcg.append(n)
                back.append(_returning(log, period.start,
                                       np.asarray(log.users[period.start:period.stop])))
            r, n, b = np.concatenate(recall), np.concatenate(ndcg), np.concatenate(back)
            out[role][knows] = {
                "recall": float(r.mean()), "ndcg": float(n.mean()),
                "returning_recall": float(r[b].mean()) if b.any() else float("nan"),
                "returning_ndcg": float(n[b].mean()) if b.any() else float("nan"),
                "returning_share": float(b.mean()),
            }
    return out


def report(figures: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"| periods | the ranking knows | R@{K} | N@{K} | R@{K}, returning | "
             f"N@{K}, returning |", "| --- | --- | --- | --- | --- | --- |"]
    for role, levels in figures.items():
        for knows, f in levels.items():
            lines.append(f"| {role} | {knows} | {f['recall']:.4f} | {f['ndcg']:.4f} | "
                         f"{f['returning_recall']:.4f} | {f['returning_ndcg']:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bench.ceiling", description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--score", choices=SCORE_CHOICES, default="online",
                        help="as the replay's --score: which rows get candidates (the same "
                        "negatives as the replay run with the same value)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    check_data_arguments(parser, args)
    try:
        figures = measure(args)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
