"""What a replay walks on and what one method's walk yields: the log cut into periods
with roles and the protocol's candidates (:class:`ReplayData`), and a method's figures
per period (:class:`MethodRun`). The walk itself is :mod:`sml.replay`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sml.candidates import Candidates
from sml.data import InteractionLog, Period, split_equal_count
from sml.metrics import PeriodEvaluation, aggregate
from sml.options import Roles

SCORE_CHOICES = ("online", "heldout")  # which periods a walk scores (ReplayData.prepare)


@dataclass(frozen=True)
class ReplayData:
    log: InteractionLog
    periods: list[Period]
    candidates: Candidates
    roles: Roles
    device: str = "cpu"  # where every method and the pretraining train (sml.device)

    @classmethod
    def prepare(
        cls,
        log: InteractionLog,
        roles: Roles = Roles(),
        *,
        periods: Sequence[Period] | None = None,
        n_negatives: int = 99,
        score: str = "online",
        device: str = "cpu",
    ) -> ReplayData:
        """Equal-count periods as many as the roles ask, unless `periods` are given (a time
        split); the protocol's candidates with `n_negatives` sampled negatives per row of
        the periods that are scored: every online period (``score="online"``) or only the
        validation and test ones (``"heldout"``, for logs so large that drawing and
        scoring candidates for the offline periods would cost more than the training)."""
        if periods is None:
            periods = split_equal_count(log, n_periods=roles.n_periods)
        if len(periods) != roles.n_periods:
            raise ValueError(f"{len(periods)} periods, the roles ask for {roles.n_periods}")
        if score not in SCORE_CHOICES:
            raise ValueError(f"score must be one of {SCORE_CHOICES}, got {score!r}")
        # "online" draws for every row, as the protocol always has (the same negatives,
        # though the pretraining rows are never scored); "heldout" from validation on
        first_row = 0 if score == "online" else periods[roles.validation[0]].start
        candidates = Candidates.sample(log, n_negatives, first_row=first_row)
        return cls(log, list(periods), candidates, roles, device)

    def scored(self, period: int) -> bool:
        """Whether the model served during ``period`` is scored on it (the first online
        period is served by the shared base alone, so it is never scored)."""
        return period > self.roles.first_online and self.candidates.covers(
            self.periods[period].start
        )


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
    # SML given several step-2 learning rates: each one's validation figures, the choice
    selection: dict[str, Any] = field(default_factory=dict)

    def summary(self, periods: Sequence[int], group: str = "all") -> dict[str, float]:
        return aggregate([self.evaluations[p] for p in periods], group)  # type: ignore[arg-type]
