"""What ``smlrec replay`` and ``smlrec tune`` share on the command line: the data set
options, the periods they cut and the roles of those periods, and input errors as one
line (exit 2)."""

from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from sml import hyperparameters as hp
from sml.data import InteractionLog, Period, split_daily, split_equal_count, split_time_windows
from sml.device import DEVICES
from sml.readers import CsvColumns
from sml.registry import ALL_METHODS

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


class UsageError(Exception):
    """A flag or an input the replay cannot use; main() prints it as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line (no usage block), exit 2, like every other input error of the replay."""
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(message: object) -> str:
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


def seed_list(text: str) -> list[int]:
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
        help="ml-100k, a synthetic profile (synthetic, synthetic-returning, synthetic-repeat, "
        "synthetic-yelp, synthetic-yelp-small), or a path: "
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
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the models train: auto (a CUDA GPU where there is one), cpu (default) "
        "or cuda; results and artifacts are CPU tensors either way",
    )


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations of the data options that cannot work (argparse's one-line error, exit 2)."""
    if args.columns is not None and Path(args.dataset).suffix != ".csv":
        parser.error(f"argument --columns: names CSV columns, and {args.dataset} is no .csv file")
    if args.periods is not None and args.split.kind != "count":
        parser.error(
            f"argument --periods: applies to --split count; --split {args.split.text} "
            "makes as many periods as the log spans"
        )


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
