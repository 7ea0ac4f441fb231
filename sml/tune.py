"""Choose hyper-parameters on a log's own validation periods: ``smlrec tune``.

    smlrec tune --dataset ml-100k --methods sml,fine_tune,full_retrain,spmf --out hyper.json
    smlrec replay --dataset ml-100k --hyper hyper.json --seeds 0,1,2 --out runs/tuned

Nothing here trains on or scores a test period. First the shared pretraining: a few
settings of the base MF, each fit on the pretraining periods and scored on the first
offline period (the period every method serves with that base). Then, for each method
and with that base, the same number of trials: the method's defaults first, then
half of the rest drawn at random from its search space, every parameter at once (a
joint random search, not one knob at a time), then the other half a local search:
each trial is the best setting so far with one or two parameters drawn afresh, so a
good region found by either stage (the defaults included) is explored around. SML's
search also starts from fine-tune's choice, when fine-tune is tuned in the same file:
with Theta frozen and W-hat fit on its own loss SML is fine-tuning, so that point lets
the search learn a transfer on top of the best fine-tuning instead of finding it again
by chance; baselines are therefore tuned first. A trial walks the method through the
offline and validation periods exactly as the replay does and stops after the last
validation period; the winner has the best validation Recall@20 (NDCG@20 breaks
ties). Every trial is logged and kept in the output file, which ``smlrec replay
--hyper`` reads. Tuning some methods into a file that already holds others, tuned
on the same data with the same base, keeps those.

For SML the search covers step 1 (the fit of W-hat), step 2 (Theta's learning rate,
epochs, batch, negatives, rounds, regularisation, Adam's state, first-seen users),
whether a new Theta must first prove itself, whether W-hat is fit through the
transfer or on its own loss and on one period or two, the transfer's width and the
offline passes. Its learning rate may come out at 0, a frozen transfer: on a log
where learning the merge does not pay on the validation periods, SML falls back to
what it starts as, fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sml import hyperparameters as hp
from sml.metrics import aggregate, evaluate_period
from sml.model import numpy_scorer
from sml.options import (
    OneLineParser,
    add_data_arguments,
    check_data_arguments,
    method_list,
    positive_int,
)
from sml.registry import BASELINES, SML_VARIANTS
from sml.replay import (
    ReplayData,
    prepare_data,
    pretrain,
    run_method,
    run_reporting_errors,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def draw(self, rng: np.random.Generator) -> Any:
        value = self.values[int(rng.integers(len(self.values)))]
        return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float
    zero: float = 0.0  # chance of drawing exactly 0 (e.g. a frozen transfer)

    def draw(self, rng: np.random.Generator) -> float:
        if self.zero and rng.random() < self.zero:
            return 0.0
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return float(f"{value:.2g}")  # two significant digits: readable, and enough


Space = dict[str, Choice | LogUniform]  # "section.field" (or "field") -> its range

FIT_SPACE: Space = {
    "fit.epochs": Choice((1, 2, 3, 5, 10)),
    "fit.lr": LogUniform(1e-3, 3e-2),
    "fit.l2": LogUniform(1e-4, 1e-1),
    "fit.n_negatives": Choice((1, 2, 4)),
}
PRETRAIN_SPACE: Space = {
    "epochs": Choice((5, 10, 20, 40)),
    "lr": LogUniform(1e-3, 3e-2),
    "l2": LogUniform(1e-4, 1e-1),
    "n_negatives": Choice((1, 2, 4)),
}
SML_SPACE: Space = {
    **FIT_SPACE,
    "meta.lr": LogUniform(1e-5, 3e-3, zero=0.1),
    "meta.epochs": Choice((1, 2, 3)),
    "meta.rounds": Choice((1, 2, 3)),
    "meta.batch_size": Choice((256, 1024)),
    "meta.l2": LogUniform(1e-6, 1e-2),
    "meta.check": Choice((True, False)),
    "meta.n_negatives": Choice((1, 4)),
    "meta.keep_optimizer": Choice((True, False)),
    "meta.first_seen": Choice(("include", "skip")),
    "transfer.hidden": Choice((64, 128, 512)),
    "transfer.merge_bias": Choice((True, False)),
    "offline_passes": Choice((1, 2)),
    "step_one": Choice(("transfer", "own")),
    "step_one_window": Choice((1, 2)),
    "step_one_history": Choice((0.0, 1.0, 2.0)),
}
# what a walk's choice sets besides the fit: (its selection key, the setter, the override)
CHOSEN = (("chosen_window", hp.with_step_one_window, "step_one_window"),
          ("chosen_history", hp.with_step_one_history, "step_one_history"),
          ("chosen_lr", hp.with_theta_lr, "meta.lr"))
SPACES: dict[str, Space] = {
    "fine_tune": FIT_SPACE,
    "full_retrain": {**FIT_SPACE, "fit.epochs": Choice((1, 2, 3, 5))},
    "spmf": {
        **FIT_SPACE,
        "reservoir_size": Choice((2_000, 5_000, 10_000, 20_000)),
        "rank_sharpness": Choice((0.0, 1.0, 3.0, 10.0)),
    },
    "popularity": {},
    **{name: SML_SPACE for name in SML_VARIANTS},
}


def nest(flat: dict[str, Any]) -> hp.Hyper:
    """``{"section.field": value}`` -> ``{"section": {"field": value}}``."""
    out: hp.Hyper = {}
    for path, value in flat.items():
        section, _, name = path.rpartition(".")
        target = out.setdefault(section, {}) if section else out
        target[name] = value
    return out


def draw(space: Space, rng: np.random.Generator) -> hp.Hyper:
    """One setting of every parameter of ``space``, as a nested hyper-parameter dict."""
    return nest({path: dimension.draw(rng) for path, dimension in space.items()})


def neighbour(space: Space, best: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """``best`` (the overrides of the best trial so far, flat; {} for the defaults) with
    one or two parameters of ``space`` drawn afresh, each to a value other than the one
    it has (where the space has another): a step of the local search."""
    changed = rng.choice(len(space), size=min(len(space), int(rng.integers(1, 3))),
                         replace=False)
    paths = list(space)
    out = dict(best)
    for path in (paths[i] for i in sorted(changed)):
        for _ in range(20):
            out[path] = space[path].draw(rng)
            if out[path] != best.get(path):
                break
    return out


def flat(hyper: hp.Hyper) -> dict[str, Any]:
    """The inverse of :func:`nest`."""
    out: dict[str, Any] = {}
    for key, value in hyper.items():
        if isinstance(value, dict):
            out.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            out[key] = value
    return out


@dataclass
class Trial:
    hyper: hp.Hyper
    recall: float
    ndcg: float
    seconds: float

    @property
    def key(self) -> tuple[float, float]:
        return (self.recall, self.ndcg)

    def to_json(self) -> dict[str, Any]:
        return {
            "hyper": self.hyper,
            "validation_recall@20": self.recall,
            "validation_ndcg@20": self.ndcg,
            "seconds": round(self.seconds, 2),
        }


def tune_pretrain(
    data: ReplayData, *, trials: int, dim: int, seed: int, rng: np.random.Generator
) -> list[Trial]:
    """Settings of the shared base MF, scored on the first offline period; best first."""
    period = data.periods[data.roles.first_online]
    out = []
    for k in range(trials):
        hyper = dict(hp.PRETRAIN) if k == 0 else {**hp.PRETRAIN, **draw(PRETRAIN_SPACE, rng)}
        start = time.perf_counter()
        base = pretrain(data, dim, seed, hyper)
        scored = evaluate_period(numpy_scorer(base, data.log.n_items), data.log, period,
                                 data.candidates)
        m = aggregate([scored])
        out.append(Trial(hyper, m["recall@20"], m["ndcg@20"], time.perf_counter() - start))
        logger.info("pretrain %d/%d %s: recall@20 %.4f ndcg@20 %.4f", k + 1, trials,
                    json.dumps(hyper), m["recall@20"], m["ndcg@20"])
    return sorted(out, key=lambda t: t.key, reverse=True)


def tune_method(
    name: str,
    data: ReplayData,
    base_hyper: hp.Hyper,
    *,
    trials: int,
    dim: int,
    seed: int,
    rng: np.random.Generator,
    starts: Sequence[dict[str, Any]] = (),
    chosen: dict[str, hp.Hyper] | None = None,
) -> list[Trial]:
    """``trials`` settings of one method (its defaults first, then ``starts``, flat
    overrides to try before the random draws), each walked through the validation
    periods from the same base; best first. ``chosen``: what the other methods' tuning
    chose (SML's step 1 may choose fine-tune's fit)."""
    base = pretrain(data, dim, seed, base_hyper)
    last = data.roles.validation[-1]
    space = SPACES[name]
    out: list[Trial] = []
    trials = trials if space else 1  # nothing to choose: the defaults only
    n_global = 1 + (trials - 1) // 2
    best: tuple[tuple[float, float], dict[str, Any]] | None = None  # (key, flat overrides)
    for k in range(trials):
        if k == 0:
            overrides: dict[str, Any] = {}
        elif k <= len(starts):
            overrides = dict(starts[k - 1])
        elif k < n_global:
            overrides = flat(draw(space, rng))
        else:
            assert best is not None
            overrides = neighbour(space, best[1], rng)
        hyper = hp.for_method(name, {**(chosen or {}), name: nest(overrides)})
        start = time.perf_counter()
        run = run_method(name, data, base, hyper=hyper, dim=dim, seed=seed, last_period=last)
        if run.selection:  # the walk chose a step-1 fit or step-2 rate: the file records it
            if "chosen_fit" in run.selection:
                hyper = hp.with_step_one_fit(hyper, run.selection["chosen_fit"])
                fit = {f"fit.{k}": v for k, v in hyper["fit"].items() if f"fit.{k}" in space}
                overrides = {**overrides, **fit}
            for chosen_key, setting, key in CHOSEN:
                if chosen_key in run.selection:
                    hyper = setting(hyper, run.selection[chosen_key])
                    overrides = {**overrides, key: run.selection[chosen_key]}
        m = run.summary(data.roles.validation)
        out.append(Trial(hyper, m["recall@20"], m["ndcg@20"], time.perf_counter() - start))
        if best is None or out[-1].key > best[0]:
            best = (out[-1].key, overrides)
        stage = ("defaults" if k == 0 else "start" if k <= len(starts)
                 else "global" if k < n_global else "local")
        logger.info("%s %d/%d %s %s: recall@20 %.4f ndcg@20 %.4f (%.0f s)", name, k + 1,
                    trials, stage, json.dumps(nest(overrides)), m["recall@20"], m["ndcg@20"],
                    out[-1].seconds)
    return sorted(out, key=lambda t: t.key, reverse=True)


def _starts(name: str, chosen: dict[str, hp.Hyper]) -> list[dict[str, Any]]:
    """Where SML's search starts besides its defaults: with Theta frozen and W-hat fit on
    its own loss, SML is fine-tuning, so fine-tune's chosen fit (when it was tuned on the
    same data and base) is a point SML can start from and learn the transfer on top of;
    step 2's rate 0 is among the rates each trial chooses from, so a Theta that does not
    pay on the validation periods is not kept."""
    if name not in SML_VARIANTS or "fine_tune" not in chosen:
        return []
    fit = chosen["fine_tune"].get("fit", {})
    space = SPACES[name]
    start = {f"fit.{k}": v for k, v in fit.items() if f"fit.{k}" in space}
    return [{**start, "step_one": "own"}] if "step_one" in space else [start]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="smlrec tune", description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--methods",
        type=method_list,
        default=["sml", "fine_tune", "full_retrain", "spmf"],
        help=f"comma-separated, from: {','.join((*SML_VARIANTS, *BASELINES))}",
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument(
        "--trials", type=positive_int, default=16, help="settings tried per method (default 16)"
    )
    parser.add_argument(
        "--pretrain-trials",
        type=positive_int,
        default=6,
        help="settings of the shared base MF tried (default 6; 1 keeps the default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the runs and the draws")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"argument --seed: {args.seed} must be >= 0")
    check_data_arguments(parser, args)
    return args


def _tune(args: argparse.Namespace) -> int:
    data, dropped = prepare_data(args)
    roles = data.roles
    logger.info("tuning on validation periods %s of %s (%s)",
                ",".join(map(str, roles.validation)), args.dataset, roles.describe())
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    bases = tune_pretrain(data, trials=args.pretrain_trials, dim=args.dim, seed=args.seed,
                          rng=rng)
    result: dict[str, Any] = {
        "pretrain": bases[0].hyper,
        "methods": {},
        "tuning": {
            "dataset": args.dataset,
            "split": args.split.text,
            "roles": roles.describe(),
            "selected_on": f"validation periods {','.join(map(str, roles.validation))}: "
            "recall@20, then ndcg@20",
            "pretrain_selected_on": f"period {roles.first_online}",
            "trials_per_method": args.trials,
            "seed": args.seed,
            "duplicates_dropped": dropped if args.dedupe else None,
            "pretrain_trials": [t.to_json() for t in bases],
            "trials": {},
        },
    }
    earlier = _earlier(args.out, result)
    if earlier:
        logger.info("%s holds %s, tuned with the same data and base: kept", args.out,
                    ",".join(sorted(set(earlier["methods"]) - set(args.methods))))
        for name, hyper in earlier["methods"].items():
            if name not in args.methods:
                result["methods"][name] = hyper
                result["tuning"]["trials"][name] = earlier["tuning"]["trials"].get(name, [])
    # baselines first: SML's search then starts from fine-tune's choice too
    for name in sorted(args.methods, key=lambda n: n in SML_VARIANTS):
        trials = tune_method(name, data, bases[0].hyper, trials=args.trials, dim=args.dim,
                             seed=args.seed, rng=rng, starts=_starts(name, result["methods"]),
                             chosen=result["methods"])
        result["methods"][name] = trials[0].hyper
        result["tuning"]["trials"][name] = [t.to_json() for t in trials]
        result["tuning"]["seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(result, indent=1))  # written as it goes
        print(f"{name:<14} best of {len(trials)}: validation recall@20 {trials[0].recall:.4f} "
              f"ndcg@20 {trials[0].ndcg:.4f}", flush=True)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


def _earlier(path: Path, result: dict[str, Any]) -> dict[str, Any] | None:
    """An earlier output at ``path`` for the same data, roles and base, whose other
    methods a run tuning only some of them keeps; None if there is none such."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = ("dataset", "split", "roles")
    if not isinstance(earlier, dict) or earlier.get("pretrain") != result["pretrain"]:
        return None
    tuning = earlier.get("tuning", {})
    if any(tuning.get(key) != result["tuning"][key] for key in same):
        return None
    return earlier


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return run_reporting_errors("smlrec tune", _tune, args)


if __name__ == "__main__":
    raise SystemExit(main())
