"""The best Recall@20 and NDCG@20 a synthetic log allows, on the replay's own periods and
candidates: how far every method is from what could be gained.

A synthetic log's generator knows each user's interests and each item's topic and
weight (:mod:`sml.ceiling`); ranking the protocol's candidates by it, knowing more or
less of the user, gives the ceilings a model's figures are read against. Same data
options as the replay, so the periods, roles and negatives are the replay's.

With ``--methods`` each method also walks the log as the replay walks it (defaults,
one seed) and every model it serves in a test period is scored in parts: whole, by
its item biases alone (popularity as the model learned it), by its user-item products
alone (what it learned of each user), and each part beside the truth's other half (the
products plus the items' true weights; the biases plus the users' true interests as
far as the previous period tells), and with its user vectors fit anew on each user's
whole history against its item table (what its items allow, whatever the method's
user vectors forgot). Where a model's whole falls short of the ceiling, the parts say
which half is missing.

    python -m bench.ceiling --dataset synthetic-returning [--negatives 99] [--score online]
                            [--methods fine_tune,sml] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.foldin import fit_user
from sml import hyperparameters as hp
from sml.ceiling import KNOWLEDGE, ceiling_scores, interest, per_row
from sml.data import InteractionLog
from sml.metrics import _returning, ranks, recall_ndcg
from sml.model import MFWeights
from sml.options import (
    OneLineParser,
    UsageError,
    add_data_arguments,
    check_data_arguments,
    method_list,
    plan,
)
from sml.replay import Served, pretrain, run_method, run_reporting_errors
from sml.replay_data import SCORE_CHOICES, ReplayData
from sml.synthetic import SYNTHETIC_PROFILES, SyntheticTruth, synthetic_drift_with_truth

PROG = "python -m bench.ceiling"
K = 20
PARTS = ("whole model", "item biases", "user-item products", "products + true item weights",
         "biases + true interests (previous)", "users refit on all their history")
REFIT_L2 = 10.0  # the refit's L2 (engine.foldin.fit_user): the best of 0.1, 1 and 10 for a probe


def prepare(args: argparse.Namespace) -> tuple[SyntheticTruth, ReplayData]:
    """The named synthetic log's truth and its replay data, as the data options cut it."""
    if args.dataset not in SYNTHETIC_PROFILES:
        raise UsageError(f"--dataset: {args.dataset} is no synthetic profile "
                         f"({', '.join(SYNTHETIC_PROFILES)}); only they know their truth")
    if SYNTHETIC_PROFILES[args.dataset].repeat:
        raise UsageError(f"--dataset: {args.dataset} repeats earlier pairs, which its truth "
                         "does not describe (it gives the chance of each new pair)")
    log, truth = synthetic_drift_with_truth(SYNTHETIC_PROFILES[args.dataset])
    periods, roles = plan(log, args)
    return truth, ReplayData.prepare(log, roles, periods=periods, n_negatives=args.negatives,
                                     score=args.score)


def measure(truth: SyntheticTruth, data: ReplayData) -> dict[str, dict[str, dict[str, float]]]:
    """{role: {knowledge: {"recall", "ndcg", "returning_recall", "returning_ndcg"}}}
    over the validation and test periods."""
    log, roles = data.log, data.roles
    out: dict[str, dict[str, dict[str, float]]] = {}
    for role, which in (("validation", roles.validation), ("test", roles.test)):
        out[role] = {}
        spans = [(data.periods[p].start, data.periods[p].stop) for p in which]
        b = np.concatenate([_returning(log, start, np.asarray(log.users[start:stop]))
                            for start, stop in spans])
        for knows in KNOWLEDGE:
            recall, ndcg = [], []
            for start, stop in spans:
                rank = ranks(ceiling_scores(log, truth, data.candidates, start, stop, knows))
                r, n = recall_ndcg(rank, K)
                recall.append(r)
                ndcg.append(n)
            r, n = np.concatenate(recall), np.concatenate(ndcg)
            out[role][knows] = {
                "recall": float(r.mean()), "ndcg": float(n.mean()),
                "returning_recall": float(r[b].mean()) if b.any() else float("nan"),
                "returning_ndcg": float(n[b].mean()) if b.any() else float("nan"),
                "returning_share": float(b.mean()),
            }
    return out


def model_parts(model: MFWeights, truth: SyntheticTruth, data: ReplayData, period: int
                ) -> dict[str, np.ndarray]:
    """Each part's ranks of the period's rows (the parts of :data:`PARTS`). As served, a
    user the model does not know is ranked by the item biases and an item it does not
    know is never ranked above a known one."""
    log, p = data.log, data.periods[period]
    cand = data.candidates.for_rows(p.start, p.stop).astype(np.int64)
    users = np.asarray(log.users[p.start:p.stop], dtype=np.int64)
    user, item = model.user.detach().cpu().numpy(), model.item.detach().cpu().numpy()
    known_user, known_item = users < len(user), cand < len(item)
    rows = item[np.where(known_item, cand, 0)]  # (n, C, d + 1)
    products = np.einsum("nd,ncd->nc", user[np.where(known_user, users, 0), :-1],
                         rows[..., :-1]) * known_user[:, None]
    biases = rows[..., -1]
    weight, chance = _truth_of(data, truth, period)
    refit = _refit_users(log, item, users, p.start)
    with np.errstate(divide="ignore"):
        parts = [products + biases, biases, products, products + np.log(weight),
                 biases + np.log(chance), np.einsum("nd,ncd->nc", refit, rows[..., :-1]) + biases]
    return {name: ranks(np.where(known_item, part, -np.inf))
            for name, part in zip(PARTS, parts, strict=True)}


def _refit_users(log: InteractionLog, item: np.ndarray, users: np.ndarray, start: int
                 ) -> np.ndarray:
    """(n, d): each row's user vector fit anew on every item the user took before row
    ``start`` that the model knows, the model's item table fixed (zero for a user with
    none): what the model's items allow a user vector to be, whatever the method forgot."""
    history_users = np.asarray(log.users[:start], dtype=np.int64)
    history_items = np.asarray(log.items[:start], dtype=np.int64)
    out = np.zeros((len(users), item.shape[1] - 1))
    for user in np.unique(users).tolist():
        taken = np.unique(history_items[history_users == user])
        taken = taken[taken < len(item)]
        if len(taken):
            out[users == user] = fit_user(item[:, :-1], item[:, -1], taken, l2=REFIT_L2)
    return out


def _truth_of(data: ReplayData, truth: SyntheticTruth, period: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) each candidate's true weight in its row's period, and the rest of its
    chance of being the row's item, as far as the previous period tells
    (:func:`sml.ceiling.interest`)."""
    p = data.periods[period]
    weight = per_row(data.log, truth, data.candidates, p.start, p.stop,
                     lambda users, items, q: truth.weight[q][items])
    chance = per_row(data.log, truth, data.candidates, p.start, p.stop,
                     lambda users, items, q: interest(truth, users, items, q, "previous"))
    return weight, chance


def measure_methods(truth: SyntheticTruth, data: ReplayData, methods: Sequence[str], dim: int,
                    seed: int) -> dict[str, dict[str, float]]:
    """{method: {part: test Recall@20}}: each method walked as the replay walks it at its
    defaults, its test periods' served models scored in parts."""
    base = pretrain(data, dim, seed)
    out: dict[str, dict[str, float]] = {}
    for name in methods:
        hits: dict[str, list[np.ndarray]] = {part: [] for part in PARTS}
        run_method(name, data, base, hyper=hp.for_method(name, {}), dim=dim, seed=seed,
                   on_served=_collect(hits, truth, data))
        out[name] = {part: float(np.concatenate(h).mean()) for part, h in hits.items()}
    return out


def _collect(hits: dict[str, list[np.ndarray]], truth: SyntheticTruth, data: ReplayData
             ) -> Served:
    """A walk's ``on_served``: each test model's parts' Recall@20 hits into ``hits``."""
    def scored(period: int, model: MFWeights) -> None:
        if period in data.roles.test:
            for part, rank in model_parts(model, truth, data, period).items():
                hits[part].append(recall_ndcg(rank, K)[0])
    return scored


def report(figures: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"| periods | the ranking knows | R@{K} | N@{K} | R@{K}, returning | "
             f"N@{K}, returning |", "| --- | --- | --- | --- | --- | --- |"]
    for role, levels in figures.items():
        for knows, f in levels.items():
            lines.append(f"| {role} | {knows} | {f['recall']:.4f} | {f['ndcg']:.4f} | "
                         f"{f['returning_recall']:.4f} | {f['returning_ndcg']:.4f} |")
    return "\n".join(lines)


def report_parts(figures: dict[str, dict[str, float]]) -> str:
    lines = [f"| test R@{K} | " + " | ".join(PARTS) + " |", "| --- |" + " --- |" * len(PARTS)]
    for name, parts in figures.items():
        lines.append(f"| {name} | " + " | ".join(f"{parts[p]:.4f}" for p in PARTS) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--score", choices=SCORE_CHOICES, default="online",
                        help="as the replay's --score: which rows get candidates (the same "
                        "negatives as the replay run with the same value)")
    parser.add_argument("--methods", type=method_list, default=[],
                        help="also walk these methods and score their models in parts")
    parser.add_argument("--seed", type=int, default=0, help="the methods' seed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    check_data_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_reporting_errors(PROG, _run, parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    truth, data = prepare(args)
    figures: dict[str, object] = {"ceilings": measure(truth, data)}
    print(report(figures["ceilings"]), flush=True)  # type: ignore[arg-type]
    if args.methods:
        torch.set_num_threads(args.threads or 1)
        torch.use_deterministic_algorithms(True)
        figures["parts"] = measure_methods(truth, data, args.methods, args.dim, args.seed)
        print("\n" + report_parts(figures["parts"]))  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
