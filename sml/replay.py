"""The paper's experiments end to end (docs/protocol.md), on any log: ``smlrec replay``.

The log is cut into periods with roles, consecutive in this order: pretraining (one
plain MF that every method starts from), offline (SML meta-trains through them,
baselines simply retrain), validation and test. Each method walks through every
period after pretraining; at period t the model it served during t (W_{t-1}) is
scored on D_t first, and only then does the method retrain on D_t. On MovieLens-100K
the protocol's periods are 0-4, 5-13, 14-15 and 16-19, so the test figures are those
of models 15..18 on periods 16..19. With several seeds every method (and the shared
pretraining) runs once per seed; the tables, Table 1 on returning users' interactions
and the paired bootstrap of SML against each method are in ``sml.report``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

from sml import hyperparameters as hp
from sml import report
from sml.data import (
    DataFormatError,
    InteractionLog,
    Period,
    drop_repeats,
    split_daily,
    split_equal_count,
    split_time_windows,
)
from sml.fit import SeenPairs, fit_mf
from sml.metrics import Candidates, PeriodEvaluation, TooFewNegatives, aggregate, evaluate_period
from sml.model import MFConfig, MFWeights, numpy_scorer
from sml.readers import CsvColumns, load_dataset
from sml.registry import ALL_METHODS, make_strategy
from sml.strategy import Strategy, concat_periods
from sml.trainer import SMLStrategy

logger = logging.getLogger(__name__)

MAIN_METHODS = ("sml", "full_retrain", "fine_tune", "spmf")
PROTOCOL_ROLES = (5, 9, 2, 4)  # pretrain, offline, validation, test periods of 20


@dataclass(frozen=True)
class Roles:
    """Which periods do what (docs/protocol.md, "Periods and their roles")."""

    n_periods: int = 20
    pretrain: tuple[int, ...] = (0, 1, 2, 3, 4)
    offline: tuple[int, ...] = tuple(range(5, 14))
    validation: tuple[int, ...] = (14, 15)
    test: tuple[int, ...] = (16, 17, 18, 19)

    @property
    def first_online(self) -> int:
        return self.pretrain[-1] + 1

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return len(self.pretrain), len(self.offline), len(self.validation), len(self.test)

    @classmethod
    def from_counts(cls, pretrain: int, offline: int, validation: int, test: int) -> Roles:
        """Consecutive runs of periods of these lengths, in this order, each at least 1."""
        counts = (pretrain, offline, validation, test)
        if min(counts) < 1:
            raise ValueError(
                f"every role needs at least one period (pretrain, offline, validation, test), "
                f"got {','.join(map(str, counts))}"
            )
        bounds = np.cumsum((0, *counts)).tolist()
        runs = [tuple(range(lo, hi)) for lo, hi in itertools.pairwise(bounds)]
        return cls(bounds[-1], *runs)

    @classmethod
    def scaled(cls, n_periods: int) -> Roles:
        """The protocol's 5/9/2/4 of 20 periods, scaled to n_periods (each role >= 1)."""
        if n_periods < 4:
            raise ValueError(
                f"{n_periods} periods: a replay needs at least 4 "
                "(pretrain, offline, validation, test)"
            )
        pretrain, _, validation, test = (
            max(1, round(n_periods * c / sum(PROTOCOL_ROLES))) for c in PROTOCOL_ROLES
        )
        # offline gets the rest, about 45%: at least one period from 4 periods up
        return cls.from_counts(pretrain, n_periods - pretrain - validation - test, validation, test)

    def describe(self) -> str:
        def span(run: tuple[int, ...]) -> str:
            return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"

        return (
            f"pretrain {span(self.pretrain)}, offline {span(self.offline)}, "
            f"validation {span(self.validation)}, test {span(self.test)}"
        )


def roles_for(n_rows: int) -> Roles:
    """The protocol's roles; a small data set (the synthetic one) gets a scaled-down walk."""
    if n_rows >= 20 * 1000:
        return Roles()
    return Roles.from_counts(2, 2, 2, 2)


@dataclass(frozen=True)
class ReplayData:
    log: InteractionLog
    periods: list[Period]
    candidates: Candidates
    roles: Roles

    @classmethod
    def prepare(
        cls,
        log: InteractionLog,
        roles: Roles = Roles(),
        *,
        periods: Sequence[Period] | None = None,
        n_negatives: int = 99,
    ) -> ReplayData:
        """Equal-count periods as many as the roles ask, unless `periods` are given (a time
        split); the protocol's candidates with `n_negatives` sampled negatives per row."""
        if periods is None:
            periods = split_equal_count(log, n_periods=roles.n_periods)
        if len(periods) != roles.n_periods:
            raise ValueError(f"{len(periods)} periods, the roles ask for {roles.n_periods}")
        return cls(log, list(periods), Candidates.sample(log, n_negatives), roles)


@dataclass
class MethodRun:
    name: str
    hyperparameters: dict[str, Any]
    evaluations: dict[int, PeriodEvaluation] = field(default_factory=dict)
    # W-hat of the served model where the method merges (SML): the merge's own contribution
    fitted_evaluations: dict[int, PeriodEvaluation] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)  # wall clock
    cpu_seconds: dict[int, float] = field(default_factory=dict)  # this process's CPU time
    offline_seconds: float = 0.0
    # SML with its check: over the whole walk, how often the learner's Theta was adopted
    # ("promotions") and how often the served lineage kept its own ("rejections")
    lineages: dict[str, int] = field(default_factory=dict)

    def summary(self, periods: Sequence[int], group: str = "all") -> dict[str, float]:
        return aggregate([self.evaluations[p] for p in periods], group)  # type: ignore[arg-type]


def pretrain(data: ReplayData, dim: int, seed: int, hyper: hp.Hyper | None = None) -> MFWeights:
    """The base MF every method starts from: plain MF on the pretraining periods."""
    history = concat_periods([data.periods[p] for p in data.roles.pretrain])
    seen = SeenPairs()
    seen.add(history.users, history.items)
    generator = torch.Generator().manual_seed(seed)
    start = MFWeights.init(MFConfig(dim=dim), history.n_users, history.n_items, generator)
    return fit_mf(
        start,
        history.users,
        history.items,
        seen=seen,
        config=hp.fit_config(hyper or hp.PRETRAIN),
        rng=np.random.default_rng(seed),
    )


def _strategy(name: str, hyper: hp.Hyper, dim: int, seed: int) -> Strategy:
    if name.startswith("sml"):
        return make_strategy(name, dim=dim, seed=seed, sml=hp.sml_config(hyper, dim, seed))
    return make_strategy(name, dim=dim, seed=seed, baseline=hp.baseline_config(hyper, dim, seed))


def run_method(
    name: str,
    data: ReplayData,
    base: MFWeights,
    *,
    hyper: hp.Hyper,
    dim: int = 64,
    seed: int = 0,
    last_period: int | None = None,
    progress: bool = False,
) -> MethodRun:
    """One method through the online periods, scoring each served model before it retrains.

    ``last_period`` stops the walk early (tuning stops at the last validation period,
    so it never sees a test period).
    """
    roles = data.roles
    last = roles.test[-1] if last_period is None else last_period
    history = [data.periods[p] for p in roles.pretrain]
    run = MethodRun(name, hp.resolved(name, hyper, dim, seed))
    strategy = _strategy(name, hyper, dim, seed)
    for _ in range(int(hyper.get("offline_passes", 1)) - 1):
        strategy.warm_start(base, history)
        start = time.perf_counter()
        for p in roles.offline:
            strategy.boundary(data.periods[p])
        run.offline_seconds += time.perf_counter() - start
    strategy.warm_start(base, history)
    online = range(roles.first_online, last + 1)
    for p in tqdm(online, desc=f"{name:>12}", disable=not progress, leave=False):
        if name == "sml_s" and p in roles.test:
            strategy.set_update_transfer(False)
        model = strategy.model
        assert model is not None
        if p > roles.first_online:  # the first online period is scored by the shared base alone
            run.evaluations[p] = _evaluate(model, data, p)
            fitted = strategy.fitted
            if fitted is not None:
                run.fitted_evaluations[p] = _evaluate(fitted, data, p)
        start, cpu = time.perf_counter(), time.process_time()
        strategy.boundary(data.periods[p])
        run.seconds[p] = time.perf_counter() - start
        run.cpu_seconds[p] = time.process_time() - cpu
    if isinstance(strategy, SMLStrategy) and strategy.learner is not None:
        run.lineages = {"promotions": strategy.promotions, "rejections": strategy.rejections}
    return run


def _evaluate(model: MFWeights, data: ReplayData, period: int) -> PeriodEvaluation:
    scorer = numpy_scorer(model, data.log.n_items)
    return evaluate_period(scorer, data.log, data.periods[period], data.candidates)


def run_seeds(
    data: ReplayData,
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    dim: int,
    overrides: hp.HyperFile | None = None,
    progress: bool = False,
) -> dict[int, dict[str, MethodRun]]:
    """Every method once per seed, each seed with its own pretrained base: seed -> method -> run."""
    overrides = overrides or hp.HyperFile(None, {})
    runs: dict[int, dict[str, MethodRun]] = {}
    for seed in seeds:
        base = pretrain(data, dim, seed, overrides.pretrain)
        runs[seed] = {}
        for name in tqdm(methods, desc=f"seed {seed}", disable=not progress):
            hyper = hp.for_method(name, overrides.methods)
            runs[seed][name] = run_method(
                name, data, base, hyper=hyper, dim=dim, seed=seed, progress=progress
            )
    return runs


# -- command line ----------------------------------------------------------------------


class UsageError(Exception):
    """A flag or an input the replay cannot use; main() prints it as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line (no usage block), exit 2, like every other input error of the replay."""
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


@dataclass(frozen=True)
class Split:
    """How the log is cut into periods: equal counts, fixed windows, or local day parts."""

    kind: str  # "count", "time" or "daily"
    seconds: float = 0.0  # the window of a "time" split
    text: str = "count"

    def periods(self, log: InteractionLog, n_periods: int) -> list[Period]:
        if self.kind == "count":
            return split_equal_count(log, n_periods=n_periods)
        if self.kind == "time":
            return split_time_windows(log, width_seconds=self.seconds)
        return split_daily(log)


_WINDOW = re.compile(r"time:(\d+(?:\.\d+)?)([hd])")


def _split(text: str) -> Split:
    if text in ("count", "daily"):
        return Split(text, text=text)
    match = _WINDOW.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not count, daily or time:<N>h / time:<N>d with N > 0"
        )
    hours = float(match[1]) * (24 if match[2] == "d" else 1)
    return Split("time", hours * 3600.0, text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _int_list(text: str, what: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"\d+", part) for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return [int(part) for part in parts]


def _roles(text: str) -> Roles:
    counts = _int_list(text, "four comma-separated period counts P,O,V,T")
    if len(counts) != 4:
        raise argparse.ArgumentTypeError(
            f"{text!r} has {len(counts)} counts; give four: pretrain,offline,validation,test"
        )
    try:
        return Roles.from_counts(*counts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seeds(text: str) -> list[int]:
    seeds = _int_list(text, "comma-separated seeds such as 0,1,2 (whole numbers >= 0)")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a seed")
    return seeds


def _columns(text: str) -> CsvColumns:
    names: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value or key not in ("user", "item", "time"):
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not user=NAME, item=NAME or time=NAME"
            )
        if key in names:
            raise argparse.ArgumentTypeError(f"{key} is given twice")
        names[key] = value
    return CsvColumns(**names)


def method_list(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"unknown methods {','.join(unknown) or '(none given)'}; "
            f"choose from {','.join(ALL_METHODS)}"
        )
    if len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(f"{text!r} names a method twice")
    return methods


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which log, cut how, with which candidates (replay and tune)."""
    parser.add_argument(
        "--dataset",
        default="ml-100k",
        help="ml-100k, a synthetic profile (synthetic, synthetic-returning), or a path: "
        "RecBole .inter, GroupLens u.data or ratings.dat, .csv with a header, Yelp review "
        "JSON lines, Adressa events",
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--split",
        type=_split,
        default=Split("count"),
        help="count (equal-count periods, default), time:<N>h or time:<N>d (fixed windows), "
        "or daily (cut at 0h, 10h and 17h Oslo time, the Adressa periods)",
    )
    parser.add_argument(
        "--periods",
        type=positive_int,
        help="number of equal-count periods (default: 20 for 20,000+ rows, else 8)",
    )
    parser.add_argument(
        "--roles",
        type=_roles,
        help="pretrain,offline,validation,test period counts in that order, e.g. 5,9,2,4 "
        "(default: the protocol's, scaled to the number of periods)",
    )
    parser.add_argument(
        "--negatives",
        type=positive_int,
        default=99,
        help="sampled candidates per test interaction (default 99)",
    )
    parser.add_argument(
        "--columns",
        type=_columns,
        help="CSV header names, e.g. user=userId,item=movieId,time=timestamp "
        "(default user_id,item_id,timestamp)",
    )
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help="keep only the first row of each repeated (user, item) pair",
    )
    parser.add_argument("--dim", type=positive_int, default=64)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads")


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations of the data options that cannot work (argparse's one-line error, exit 2)."""
    if args.columns is not None and Path(args.dataset).suffix != ".csv":
        parser.error(f"argument --columns: names CSV columns, and {args.dataset} is no .csv file")
    if args.periods is not None and args.split.kind != "count":
        parser.error(
            f"argument --periods: applies to --split count; --split {args.split.text} "
            "makes as many periods as the log spans"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="smlrec replay", description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--methods",
        type=method_list,
        default=list(MAIN_METHODS),
        help=f"comma-separated, from: {','.join(ALL_METHODS)}",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one seed (default 0)")
    seeds.add_argument(
        "--seeds", type=_seeds, help="several seeds, e.g. 0,1,2: mean +- sd over them"
    )
    parser.add_argument(
        "--hyper",
        type=Path,
        help="hyper-parameters: the file `smlrec tune` writes, or JSON {method: overrides}",
    )
    args = parser.parse_args(argv)
    args.seeds = args.seeds or [0 if args.seed is None else args.seed]
    if args.seed is not None and args.seed < 0:
        parser.error(f"argument --seed: {args.seed} must be >= 0")
    check_data_arguments(parser, args)
    return args


def read_overrides(path: Path | None, dim: int) -> hp.HyperFile:
    """--hyper's file (``smlrec tune``'s output, or {method: overrides}), checked."""
    if path is None:
        return hp.HyperFile(None, {})
    try:
        return hp.read_hyper_file(path, dim)
    except ValueError as exc:
        raise UsageError(f"--hyper {exc}") from None


def plan(log: InteractionLog, args: argparse.Namespace) -> tuple[list[Period], Roles]:
    """The periods and their roles from --split, --periods and --roles, or why they cannot be."""
    split: Split = args.split
    if split.kind == "count":
        roles: Roles = args.roles or (
            _scaled(args.periods, "--periods") if args.periods else roles_for(len(log))
        )
        if args.periods is not None and args.periods != roles.n_periods:
            raise UsageError(
                f"--roles {','.join(map(str, roles.counts))} makes {roles.n_periods} periods, "
                f"--periods asks for {args.periods}"
            )
        if len(log) < roles.n_periods:
            raise UsageError(
                f"{args.dataset} has {len(log):,} interactions, too few for "
                f"{roles.n_periods} periods"
            )
        return split.periods(log, roles.n_periods), roles
    periods = split.periods(log, 0)
    if args.roles is None:
        return periods, _scaled(len(periods), f"--split {split.text} on {args.dataset}")
    if args.roles.n_periods != len(periods):
        raise UsageError(
            f"--split {split.text} made {len(periods)} periods of {args.dataset}; "
            f"--roles {','.join(map(str, args.roles.counts))} asks for {args.roles.n_periods}"
        )
    return periods, args.roles


def _scaled(n_periods: int, source: str) -> Roles:
    try:
        return Roles.scaled(n_periods)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors("smlrec replay", _replay, args)


def run_reporting_errors(
    prog: str, command: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """``command(args)``, with every input error it raises printed as one line, exit 2."""
    try:
        return command(args)
    except (UsageError, DataFormatError) as exc:
        message = str(exc)
    except TooFewNegatives as exc:
        message = f"--negatives {args.negatives}: {exc}"
    except OSError as exc:  # the data set or an output cannot be read or written
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
    return 2


def prepare_data(args: argparse.Namespace) -> tuple[ReplayData, int]:
    """The log the data options name, cut into periods with roles and candidates; also
    how many repeated rows --dedupe dropped. Sets the torch threads and determinism."""
    log = load_dataset(args.dataset, args.cache_dir, columns=args.columns or CsvColumns())
    dropped = 0
    if args.dedupe:
        kept = drop_repeats(log)
        dropped, log = len(log) - len(kept), kept
    periods, roles = plan(log, args)
    data = ReplayData.prepare(log, roles, periods=periods, n_negatives=args.negatives)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the same seed must give the same numbers: no order-dependent float scatters
    torch.use_deterministic_algorithms(True)
    return data, dropped


def _replay(args: argparse.Namespace) -> int:
    overrides = read_overrides(args.hyper, args.dim)
    data, dropped = prepare_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    header = report.header(data, args.dataset, args.split.text, args.seeds, args.dedupe, dropped)
    print(header, flush=True)

    start = time.perf_counter()
    runs = run_seeds(
        data, args.methods, args.seeds, dim=args.dim, overrides=overrides, progress=True
    )
    result = report.Replay(data, runs)
    text = report.render(result)
    print("\n" + text)
    results = report.results_json(
        result,
        dataset=args.dataset,
        split=args.split.text,
        dim=args.dim,
        duplicates_dropped=dropped if args.dedupe else None,
        pretrain=overrides.pretrain or hp.PRETRAIN,
    )
    results["wall_seconds"] = time.perf_counter() - start
    (args.out / "results.json").write_text(report.to_json(results))
    (args.out / "report.txt").write_text(header + "\n\n" + text + "\n")
    report.plot(result, args.out / "recall_per_period.png")
    print(
        f"\nwrote {args.out / 'results.json'} and {args.out / 'recall_per_period.png'} "
        f"in {results['wall_seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
