"""The paper's experiments end to end (docs/protocol.md), on any log: ``smlrec replay``.

The log is cut into periods with roles, consecutive in this order: pretraining (one
plain MF that every method starts from), offline (SML meta-trains through them,
baselines simply retrain), validation and test. Each method walks through every
period after pretraining; at period t the model it served during t (W_{t-1}) is
scored on D_t first, and only then does the method retrain on D_t. On MovieLens-100K
the protocol's periods are 0-4, 5-13, 14-15 and 16-19, so the test figures are those
of models 15..18 on periods 16..19. With several seeds every method (and the shared
pretraining) runs once per seed; the tables, Table 1 on returning users' interactions
and the paired bootstrap of SML against each method are in ``sml.report`` (the figures
and results.json in ``sml.results``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sml import hyperparameters as hp
from sml import report, results
from sml.bootstrap import Interval
from sml.candidates import TooFewNegatives
from sml.data import DataFormatError, drop_repeats
from sml.device import resolve as resolve_device
from sml.fit import SeenPairs, fit_mf
from sml.metrics import PeriodEvaluation, evaluate_period
from sml.model import MFConfig, MFWeights, numpy_scorer
from sml.options import (
    OneLineParser,
    UsageError,
    add_data_arguments,
    check_data_arguments,
    method_list,
    one_line,
    plan,
    read_overrides,
    seed_list,
)
from sml.readers import CsvColumns, load_dataset
from sml.registry import ALL_METHODS, from_hyper
from sml.replay_data import SCORE_CHOICES, MethodRun, ReplayData
from sml.strategy import concat_periods
from sml.trainer import SMLStrategy

logger = logging.getLogger(__name__)
Served = Callable[[int, MFWeights], None]  # what a walk tells of each model it scores

MAIN_METHODS = ("sml", "full_retrain", "fine_tune", "spmf")


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
        config=replace(hp.fit_config(hyper or hp.PRETRAIN), device=data.device),
        rng=np.random.default_rng(seed),
    )


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
    on_served: Served | None = None,
) -> MethodRun:
    """One method through the online periods, scoring each served model before it retrains.

    ``last_period`` stops the walk early (tuning stops at the last validation period,
    so it never sees a test period). ``on_served(period, model)`` sees each model scored,
    every candidate walk's too (only the chosen one reaches the test periods). An SML
    method given several step-2 learning rates (``meta_lrs``), step-1 fits
    (``step_one_fits``) or step-1 windows (``step_one_windows``) walks once per
    combination up to the last validation period and continues the walk that scored
    best there (see :func:`_walk_candidates`).
    """
    roles = data.roles
    last = roles.test[-1] if last_period is None else last_period
    grid = hp.candidates(name, hyper)
    if len(grid) > 1 and roles.validation and last >= roles.validation[-1]:
        walks = _walk_candidates(name, data, base, grid, dim, seed, progress, on_served)
        chosen = _chosen([walks], roles.validation)
        return _go_on(walks, chosen, _against([walks], chosen, data), last, [seed], progress)
    walk = _Walk(name, data, base, grid[0][1], dim, seed, progress=progress, on_served=on_served)
    return walk.to(last, progress)


class _Walk:
    """One method walking the online periods from the shared base: at each period the
    served model is scored first, then the method retrains on the period."""

    def __init__(
        self, name: str, data: ReplayData, base: MFWeights, hyper: hp.Hyper, dim: int, seed: int,
        *, label: str = "", progress: bool = False,
        on_served: Served | None = None,
    ) -> None:
        self.name, self.data, self.on_served = name, data, on_served
        self.desc = f"{name:>12}{label}"  # what the progress bars say
        self.run = MethodRun(name, hp.resolved(name, hyper, dim, seed))
        self.strategy = from_hyper(name, hyper, dim=dim, seed=seed, device=data.device)
        roles = data.roles
        history = [data.periods[p] for p in roles.pretrain]
        passes = int(hyper.get("offline_passes", 1)) - 1
        for n in range(passes):
            self.strategy.warm_start(base, history)
            start = time.perf_counter()
            for p in tqdm(roles.offline, desc=f"{self.desc} offline pass {n + 1}/{passes}",
                          disable=not progress, leave=False):
                self.strategy.boundary(data.periods[p])
            self.run.offline_seconds += time.perf_counter() - start
        self.strategy.warm_start(base, history)
        self.next = roles.first_online  # the next period to score and train on

    def to(self, last: int, progress: bool = False) -> MethodRun:
        """Walk on through period ``last``; the run so far."""
        roles, strategy, run = self.data.roles, self.strategy, self.run
        periods = range(self.next, last + 1)
        for p in tqdm(periods, desc=self.desc, disable=not progress, leave=False):
            if self.name == "sml_s" and p in roles.test:
                strategy.set_update_transfer(False)
            model = strategy.model
            assert model is not None
            if self.data.scored(p):
                run.evaluations[p] = _evaluate(model, self.data, p)
                if self.on_served is not None:
                    self.on_served(p, model)
                fitted = strategy.fitted
                if fitted is not None:
                    run.fitted_evaluations[p] = _evaluate(fitted, self.data, p)
            start, cpu = time.perf_counter(), time.process_time()
            strategy.boundary(self.data.periods[p])
            run.seconds[p] = time.perf_counter() - start
            run.cpu_seconds[p] = time.process_time() - cpu
        self.next = max(self.next, last + 1)
        if isinstance(strategy, SMLStrategy) and strategy.learner is not None:
            run.lineages = {"promotions": strategy.promotions, "rejections": strategy.rejections}
        return run


def _walk_candidates(
    name: str, data: ReplayData, base: MFWeights, grid: Sequence[tuple[dict[str, Any], hp.Hyper]],
    dim: int, seed: int, progress: bool, on_served: Served | None = None,
) -> list[tuple[dict[str, Any], _Walk]]:
    """Theta's step-2 learning rate and step 1's fit and window are chosen on the log's
    own validation periods; this walks once per candidate, from the same base with the
    same seed, up to the last validation period.

    How far Theta may move per period decides whether the transfer helps or wrecks the
    model, and the rate that works differs from log to log by orders of magnitude; how
    tightly W-hat is fit to one period (step 1 is fine-tuning it), and on how many,
    differs between logs too. No walk scores a test period before the choice
    (:func:`_chosen`), and the walks that lose go no further.
    """
    walks = []
    for label, hyper in grid:
        shown = " ".join(f"{key}={value}" for key, value in label.items())
        walk = _Walk(name, data, base, hyper, dim, seed, label=f" [{shown}]", progress=progress,
                     on_served=on_served)
        m = walk.to(data.roles.validation[-1], progress).summary(data.roles.validation)
        logger.info("%s seed %d: %s, validation recall@20 %.4f ndcg@20 %.4f",
                    name, seed, label, m["recall@20"], m["ndcg@20"])
        walks.append((label, walk))
    return walks


def _chosen(per_seed: Sequence[list[tuple[dict[str, Any], _Walk]]], validation: Sequence[int]
            ) -> int:
    """The candidate with the best validation Recall@20 (NDCG@20 on a tie, then the
    earlier one), averaged over the seeds given. Two validation periods of a small log
    separate candidates by less than their noise (on MovieLens-100K the best two were
    0.0018 apart on one seed of three): every seed's walks are evidence about the same
    log, so with several seeds the choice is one for the log, made on all of them. Every
    seed's candidate walks are held until then (memory: seeds x candidates strategies)."""
    def key(index: int) -> tuple[float, float, int]:
        figures = [walks[index][1].run.summary(validation) for walks in per_seed]
        return (float(np.mean([m["recall@20"] for m in figures])),
                float(np.mean([m["ndcg@20"] for m in figures])), -index)

    return max(range(len(per_seed[0])), key=key)


def _against(per_seed: Sequence[list[tuple[dict[str, Any], _Walk]]], chosen: int,
             data: ReplayData) -> list[Interval]:
    """Each candidate's validation Recall@20 minus the chosen one's, with its interval."""
    return results.against_chosen([[w.run for _, w in walks] for walks in per_seed], chosen, data)


def _go_on(walks: list[tuple[dict[str, Any], _Walk]], chosen: int, against: Sequence[Interval],
           last: int, seeds: Sequence[int], progress: bool) -> MethodRun:
    """The chosen walk on through period ``last``, with what was chosen and why: each
    candidate's validation figures and how far its Recall@20 is from the chosen one's."""
    cpu = sum(sum(walk.run.cpu_seconds.values()) for _, walk in walks)
    validation = walks[chosen][1].data.roles.validation
    candidates = []
    for (label, walk), gap in zip(walks, against, strict=True):
        m = walk.run.summary(validation)
        candidates.append({**label, "recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"],
                           "recall@20_vs_chosen": results.interval_json(gap)})
    run = walks[chosen][1].to(last, progress)
    run.selection = {
        **{f"chosen_{key}": value for key, value in walks[chosen][0].items()},
        "by": "validation recall@20" + (" (mean over seeds)" if len(seeds) > 1 else ""),
        "seeds": list(seeds),
        "periods": list(validation),
        "candidates": candidates,
        # retraining CPU of every candidate over the online periods up to the choice
        # (their offline passes not included)
        "cpu_seconds": cpu,
    }
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
    """Every method once per seed, each seed with its own pretrained base: seed -> method ->
    run. A method that chooses its settings on validation (SML's step-2 rate and step-1
    fit) walks every candidate on every seed to the last validation period first, and
    goes on with the one that scored best on the seeds' mean (:func:`_chosen`)."""
    overrides = overrides or hp.HyperFile(None, {})
    roles = data.roles
    bases = {}
    for seed in seeds:
        started = time.perf_counter()
        if progress:
            tqdm.write(f"seed {seed}: pretraining the shared base on periods "
                       f"{roles.pretrain[0]}-{roles.pretrain[-1]}")
        bases[seed] = pretrain(data, dim, seed, overrides.pretrain)
        if progress:
            tqdm.write(f"seed {seed}: base ready in {time.perf_counter() - started:.0f} s")
    runs: dict[int, dict[str, MethodRun]] = {seed: {} for seed in seeds}
    for name in tqdm(methods, desc="methods", disable=not progress):
        hyper = hp.for_method(name, overrides.methods)
        grid = hp.candidates(name, hyper)
        if len(grid) == 1:
            for seed in seeds:
                runs[seed][name] = run_method(name, data, bases[seed], hyper=hyper, dim=dim,
                                              seed=seed, progress=progress)
            continue
        walks = [_walk_candidates(name, data, bases[seed], grid, dim, seed, progress)
                 for seed in seeds]
        chosen = _chosen(walks, roles.validation)
        against = _against(walks, chosen, data)
        for seed, seed_walks in zip(seeds, walks, strict=True):
            runs[seed][name] = _go_on(seed_walks, chosen, against, roles.test[-1], seeds,
                                      progress)
    return runs


# -- command line ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="smlrec replay", description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--score",
        choices=SCORE_CHOICES,
        default="online",
        help="which periods each method is scored on: every online period (default) or "
        "only validation and test (heldout: for large logs, where drawing and scoring "
        "candidates for the offline periods costs more than the training)",
    )
    parser.add_argument("--methods", type=method_list, default=list(MAIN_METHODS),
                        help=f"comma-separated, from: {','.join(ALL_METHODS)}")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one seed (default 0)")
    seeds.add_argument("--seeds", type=seed_list,
                       help="several seeds, e.g. 0,1,2: mean +- sd over them")
    parser.add_argument("--hyper", type=Path, help="hyper-parameters: the file `smlrec tune` "
                        "writes, or JSON {method: overrides}")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or [0 if args.seed is None else args.seed]
    if args.seed is not None and args.seed < 0:
        parser.error(f"argument --seed: {args.seed} must be >= 0")
    check_data_arguments(parser, args)
    return args


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
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return 2


def prepare_data(args: argparse.Namespace, *, score: str = "online"
                 ) -> tuple[ReplayData, int]:
    """The log the data options name, cut into periods with roles and candidates; also
    how many repeated rows --dedupe dropped (``score``: which periods get candidates, as
    :meth:`ReplayData.prepare` takes it). Sets the torch threads and determinism."""
    log = load_dataset(args.dataset, args.cache_dir, columns=args.columns or CsvColumns())
    dropped = 0
    if args.dedupe:
        kept = drop_repeats(log)
        dropped, log = len(log) - len(kept), kept
    periods, roles = plan(log, args)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    data = ReplayData.prepare(
        log, roles, periods=periods, n_negatives=args.negatives,
        score=score,
        device=device,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    # the same seed must give the same numbers: no order-dependent float scatters
    torch.use_deterministic_algorithms(True)
    return data, dropped


def _replay(args: argparse.Namespace) -> int:
    overrides = read_overrides(args.hyper, args.dim)
    data, dropped = prepare_data(args, score=args.score)
    args.out.mkdir(parents=True, exist_ok=True)
    header = report.header(data, args.dataset, args.split.text, args.seeds, args.dedupe, dropped)
    print(header, flush=True)

    start = time.perf_counter()
    runs = run_seeds(
        data, args.methods, args.seeds, dim=args.dim, overrides=overrides, progress=True
    )
    result = results.Replay(data, runs)
    text = report.render(result)
    print("\n" + text)
    figures = results.results_json(
        result,
        dataset=args.dataset,
        split=args.split.text,
        dim=args.dim,
        duplicates_dropped=dropped if args.dedupe else None,
        pretrain=overrides.pretrain or hp.PRETRAIN,
    )
    figures["wall_seconds"] = time.perf_counter() - start
    (args.out / "results.json").write_text(results.to_json(figures))
    (args.out / "report.txt").write_text(header + "\n\n" + text + "\n")
    report.plot(result, args.out / "recall_per_period.png")
    print(
        f"\nwrote {args.out / 'results.json'} and {args.out / 'recall_per_period.png'} "
        f"in {figures['wall_seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
