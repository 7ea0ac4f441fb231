"""Sequential Meta-Learning (Zhang et al., SIGIR 2020, Algorithm 1).

At period t the strategy holds W_{t-1} (served during t) and, from the previous
boundary, W_{t-2}, W-hat_{t-1}, D_{t-1} and Theta. When D_t closes:

1. meta step for t-1 (now that its next period D_t is here): R rounds of
   {step 1: fit W-hat_{t-1} on D_{t-1} through the transfer, Theta fixed;
    step 2: fit Theta on D_t with W-hat_{t-1} fixed}, then the refined
   W_{t-1} = f_Theta(W_{t-2}, W-hat_{t-1});
2. step 1 for t: W-hat_t starts from W_{t-1}, is fit on D_t through the
   transfer with Theta fixed, and W_t = f_Theta(W_{t-1}, W-hat_t) is served.

Where the paper leaves room this implementation chooses (docs/method.md has the
reasons and the measured worth of each): the first round's step 1 of the meta step
is skipped and later rounds refit W-hat for ``meta.refit_epochs``; only the rows D_t
changed are merged (``scope="touched"``; ``"all"`` is the paper's formula); with
``meta.check`` a learner lineage runs the paper's procedure beside the served one
and is adopted only once it has ranked a closing period better (sampled Recall@20,
:mod:`sml.check`); no meta step follows a warm start (``warm_anchor="none"``); step
1 fits W-hat on its own loss (``step_one="own"``, the paper's SML-FP) or through
the transfer (``"transfer"``, the paper's SML), on D_t or (``step_one_window=2``) on
D_{t-1} and D_t, plus (``step_one_history``) a uniform sample of the pairs seen so
far, drawn anew for each epoch (``history_draw``). The replay chooses the step-2 rate
and step 1's fit, window and sample on the log's validation periods; ``fit.device``
says where it trains.

Variants: ``sml_n`` trains Theta on D_{t-1} itself; ``sml_fp`` and ``sml_st`` fix
``step_one`` to ``"own"`` and ``"transfer"``; SML-S is ``set_update_transfer(False)``
in test periods, ``sml_frozen`` from the start (Theta never trained); SML-CNN and
SML-FC are transfer kinds (``sml.transfer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sml.check import CHECK_NEGATIVES, ranking_score
from sml.fit import Batch, Draw, FitConfig, SeenPairs, fit_mf, run_epochs, sample_negatives
from sml.lineage import Lineage
from sml.merge import Scope, Side, merged_loss
from sml.model import MFConfig, MFWeights
from sml.strategy import (
    PeriodData,
    PeriodLike,
    as_period_data,
    concat_periods,
    period_from_state,
    period_state,
    weights_of,
    without_users,
)
from sml.transfer import TransferConfig, TransferPair, column_scale

Variant = Literal["sml", "sml_n"]
# every name SMLConfig.for_variant and the registry accept
VARIANT_NAMES = ("sml", "sml_s", "sml_n", "sml_cnn", "sml_fc", "sml_fp", "sml_st", "sml_frozen")
FirstSeen = Literal["include", "skip"]
StepOne = Literal["transfer", "own"]
WarmAnchor = Literal["none", "init"]
HistoryDraw = Literal["epoch", "once"]


@dataclass(frozen=True)
class MetaConfig:
    rounds: int = 1  # R
    epochs: int = 1  # epochs over the objective period per step 2
    lr: float = 1e-3
    l2: float = 1e-4  # lambda_2, on Theta
    batch_size: int = 256
    n_negatives: int = 1  # per positive in step 2
    refit_epochs: int = 1  # step-1 epochs of W-hat in the rounds after the first
    keep_optimizer: bool = True  # Adam's moments carried from one boundary to the next
    check: bool = True  # serve a new Theta only once it has served a period better
    first_seen: FirstSeen = "include"  # objective users the tables do not know yet


@dataclass(frozen=True)
class SMLConfig:
    mf: MFConfig = field(default_factory=MFConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    fit: FitConfig = field(default_factory=FitConfig)  # step 1 (and the cold start)
    meta: MetaConfig = field(default_factory=MetaConfig)  # step 2
    scope: Scope = "touched"  # rows the transfer merges
    # the model before the warm-start base: "none" (no meta step at the next boundary)
    # or "init" (fresh rows play it, so Theta's first update learns from noise)
    warm_anchor: WarmAnchor = "none"
    # step 1: W-hat fit through the transfer (the merged rows' loss, the paper's SML) or
    # on its own MF loss ("own": SML-FP, plain fine-tuning of W-hat, then the merge)
    step_one: StepOne = "transfer"
    # step 1 fits W-hat_t on D_t (1, the paper) or on D_{t-1} and D_t (2), which the
    # strategy holds for the meta step anyway: twice the evidence per row, no more history
    # (the meta step's refit through the transfer, in rounds after the first, uses D_{t-1})
    step_one_window: int = 1
    # plus this many times D_t's rows drawn uniformly from all pairs seen so far (which
    # the strategy holds for its negatives anyway): a bounded reminder of the history
    step_one_history: float = 0.0
    # the sample drawn anew for each epoch ("epoch": as many steps, more of the history
    # seen), or once and fitted in every epoch ("once")
    history_draw: HistoryDraw = "epoch"
    variant: Variant = "sml"
    seed: int = 0

    def for_variant(self, name: str) -> SMLConfig:
        """This configuration as one of the paper's variants (SML-S differs only in how
        it is driven: no transfer update in test periods)."""
        if name in ("sml", "sml_s", "sml_frozen"):
            return self
        if name == "sml_n":
            return replace(self, variant="sml_n")
        if name == "sml_fp":
            return replace(self, step_one="own")
        if name == "sml_st":
            return replace(self, step_one="transfer")
        if name == "sml_cnn":
            return replace(self, transfer=replace(self.transfer, kind="no_cnn"))
        if name == "sml_fc":
            return replace(self, transfer=replace(self.transfer, kind="no_fc"))
        raise ValueError(f"unknown SML variant {name!r}")


class SMLStrategy:
    """SML as a retraining strategy. With ``meta.check`` two lineages run side by side:
    the served one, whose Theta changes only when proven, and the learner, which runs
    the paper's procedure (Theta trained at every boundary and used at once). At each
    boundary both are scored on the period that just closed, which neither has
    trained on; the learner becomes the served lineage when it ranked that period's
    interactions better. Without the check the served lineage is the learner."""

    def __init__(self, config: SMLConfig, name: str = "sml") -> None:
        self.name = name
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)  # step 1: its shuffles, negatives, sample
        # the meta step's, the check's and the learner lineage's own draws (new rows too), so
        # walks differing only in how Theta learns fit the served W-hat from the same draws
        self.meta_rng = np.random.default_rng([config.seed, 1])
        self.meta_generator = torch.Generator().manual_seed(config.seed + 1)
        self.device = config.fit.device  # where every step trains (sml.device)
        with torch.random.fork_rng():  # Theta's initial value follows the seed too
            torch.manual_seed(config.seed)
            transfers = TransferPair(config.mf.dim + 1, config.transfer).to(self.device)
        optimizer = torch.optim.Adam(transfers.parameters(), lr=config.meta.lr)
        self.served = Lineage(transfers, optimizer)
        self.learner: Lineage | None = self.served.copy() if config.meta.check else None
        self.same = True  # the learner is (still) a copy of the served lineage
        self.seen = SeenPairs()
        self.update_transfer = True
        self.last: PeriodData | None = None  # D_{t-1}
        self.boundaries = 0
        self.theta_updates = 0  # step-2 passes run (meta steps)
        self.promotions = 0  # boundaries where the learner proved better and was adopted
        self.rejections = 0  # boundaries where the served lineage scored at least as well

    @property
    def model(self) -> MFWeights | None:
        return self.served.current

    @property
    def fitted(self) -> MFWeights | None:
        """W-hat of the model served now (what the transfer merged with the previous model);
        None before the first merge (after a cold start or a warm start W is W-hat)."""
        return self.served.hat if self.served.anchor is not None else None

    @property
    def transfers(self) -> TransferPair:
        """Theta of the served lineage."""
        return self.served.transfers

    def set_update_transfer(self, enabled: bool) -> None:
        self.update_transfer = enabled

    def forget_users(self, users: np.ndarray) -> None:
        self.seen.remove_users(users)
        self.last = without_users(self.last, users)
        for lineage in (self.served, self.learner):
            if lineage is not None:
                lineage.forget_users(users)

    # -- the period boundary ------------------------------------------------------------
    def warm_start(self, base: MFWeights, history: Sequence[PeriodLike]) -> None:
        """Start from a plain MF trained on ``history``: it is served, and it plays W-hat of
        the last period; there is no model before it, so the next boundary has no meta step."""
        data = concat_periods(history)
        self.seen = SeenPairs()
        self.seen.add(data.users, data.items)
        anchor = None
        if self.config.warm_anchor == "init":
            anchor = MFWeights.init(self.config.mf, base.n_users, base.n_items, self.generator)
        self.served.current, self.served.hat, self.served.anchor = base.detach(), base, anchor
        self._follow()
        last = history[-1]
        self.last = PeriodData(last.users, last.items, base.n_users, base.n_items,
                               weights_of(last))

    def boundary(self, period: PeriodLike) -> MFWeights:
        data = as_period_data(period)
        self.seen.add(data.users, data.items)
        served = self.served
        if served.current is None:
            start = MFWeights.init(self.config.mf, data.n_users, data.n_items, self.generator)
            base = fit_mf(start, data.users, data.items, seen=self.seen, config=self.config.fit,
                          rng=self.rng, weights=data.weights)
            served.current, served.hat, served.anchor = base, base, None
            self._follow()
        else:
            if self.learner is not None and not self.same:
                self._compare(data)
            learning = self.learner or self.served
            # at step-2 rate 0 nothing is learned: the strategy is SML-0 and pays as much
            learns = self.update_transfer and self.config.meta.lr > 0
            if learns and learning.anchor is not None:
                self._meta_step(learning, data)
                self.same = False
            self._step_one(self.served, data, self.rng, self.generator)
            if self.learner is not None:
                if self.same:
                    self._follow()
                else:
                    self._step_one(self.learner, data, self.meta_rng, self.meta_generator)
        self.last = data
        self.boundaries += 1
        assert self.served.current is not None
        return self.served.current

    def _follow(self) -> None:
        """Make the learner a copy of the served lineage (with the check on)."""
        if self.learner is not None:
            self.learner = self.served.copy()
            self.same = True

    def _compare(self, data: PeriodData) -> None:
        """Score both lineages' W_{t-1} on D_t, which neither has trained on, with the same
        sampled negatives; adopt the learner if it ranks D_t better."""
        assert self.learner is not None
        served, learner = self.served.current, self.learner.current
        assert served is not None and learner is not None
        keep = data.items < min(served.n_items, learner.n_items)
        users, items = data.users[keep], data.items[keep]
        if users.shape[0] == 0:
            return
        negatives = sample_negatives(users, CHECK_NEGATIVES, served.n_items, self.seen,
                                     self.meta_rng)
        check = (torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(negatives))
        if ranking_score(learner, check) > ranking_score(served, check):
            self.served = self.learner.copy()
            self.same = True
            self.promotions += 1
        else:
            self.rejections += 1

    def _meta_step(self, lineage: Lineage, next_period: PeriodData) -> None:
        assert lineage.anchor is not None and lineage.hat is not None and self.last is not None
        meta, variant = self.config.meta, self.config.variant
        objective = self.last if variant == "sml_n" else next_period
        for r in range(meta.rounds):
            if r > 0 and self.config.step_one == "transfer":
                lineage.hat = self._fit_hat(lineage, lineage.anchor, lineage.hat, self.last,
                                            epochs=meta.refit_epochs, rng=self.meta_rng)
            self._step_two(lineage, objective)
        lineage.current = self._merge(lineage, lineage.anchor, lineage.hat)
        self.theta_updates += 1

    def _step_one(self, lineage: Lineage, data: PeriodData, rng: np.random.Generator,
                  generator: torch.Generator) -> None:
        assert lineage.current is not None
        prev = lineage.current.grow(data.n_users, data.n_items, self.config.mf, generator)
        drawn = round(self.config.step_one_history * len(data.users))
        if self.config.step_one_window == 2 and self.last is not None:
            data = concat_periods([self.last, data])  # the rows either changed are merged
        # the history sample: D_t's pairs are among the seen ones, deleted users' not
        extra = partial(self.seen.sample, drawn, rng) if drawn and len(self.seen) else None
        if extra is not None and self.config.history_draw == "once":
            data = concat_periods([PeriodData(*extra(), data.n_users, data.n_items), data])
            extra = None
        hat = self._fit_hat(lineage, prev, prev, data, epochs=self.config.fit.epochs,
                            rng=rng, extra=extra)
        lineage.anchor, lineage.hat = prev, hat
        lineage.current = self._merge(lineage, prev, hat)

    def _fit_hat(self, lineage: Lineage, anchor: MFWeights, start: MFWeights,
                 data: PeriodData, *, epochs: int, rng: np.random.Generator,
                 extra: Draw | None = None) -> MFWeights:
        """Step 1: W-hat on D through the transfer (Theta fixed), or on its own loss."""
        fit = replace(self.config.fit, epochs=epochs)
        if self.config.step_one == "own":
            return fit_mf(start, data.users, data.items, seen=self.seen, config=fit, rng=rng,
                          weights=data.weights, extra=extra)
        device = self.device
        hat = start.trainable(device)
        # step 1 changes every row of a batch, so every row of a batch goes through f
        users, items = (
            Side(prev, fitted, torch.ones(prev.shape[0], dtype=torch.bool, device=device),
                 column_scale(prev))
            for prev, fitted in ((anchor.user.to(device), hat.user),
                                 (anchor.item.to(device), hat.item))
        )
        transfers = lineage.transfers
        transfers.requires_grad_(False)

        def loss_of(batch: Batch) -> Tensor:
            b_users, pos, neg, _ = batch
            merged = merged_loss(transfers, users, items, batch, hat)
            rows = (hat.user[b_users], hat.item[pos], hat.item[neg])
            reg = sum(r.square().sum() for r in rows) / b_users.shape[0]
            return merged + fit.l2 * reg

        try:
            run_epochs([hat.user, hat.item], loss_of, data.users, data.items,
                       n_items=data.n_items, seen=self.seen, config=fit, rng=rng,
                       weights=data.weights, extra=extra)
        finally:
            transfers.requires_grad_(True)
        return hat.detach().to("cpu")

    def _step_two(self, lineage: Lineage, objective: PeriodData) -> None:
        """Step 2: Theta on the objective period with W-hat fixed."""
        assert lineage.anchor is not None and lineage.hat is not None
        meta = self.config.meta
        keep = objective.items < lineage.hat.n_items  # nothing can score items it does not know
        if meta.first_seen == "skip":
            keep &= objective.users < lineage.hat.n_users
        users, items = objective.users[keep], objective.items[keep]
        weights = None if objective.weights is None else objective.weights[keep]
        if users.shape[0] == 0:
            return
        users_side, items_side = self._sides(lineage.anchor, lineage.hat)
        transfers = lineage.transfers
        if not meta.keep_optimizer:
            lineage.optimizer = torch.optim.Adam(transfers.parameters(), lr=meta.lr)
        params = list(transfers.parameters())

        def loss_of(batch: Batch) -> Tensor:
            reg = sum(p.square().sum() for p in params)
            return merged_loss(transfers, users_side, items_side, batch) + meta.l2 * reg

        config = FitConfig(epochs=meta.epochs, lr=meta.lr, n_negatives=meta.n_negatives,
                           batch_size=meta.batch_size, device=self.device)
        run_epochs(params, loss_of, users, items, n_items=lineage.hat.n_items, seen=self.seen,
                   config=config, rng=self.meta_rng, optimizer=lineage.optimizer, weights=weights)

    def _sides(self, anchor: MFWeights, hat: MFWeights) -> tuple[Side, Side]:
        """The transfer's inputs for users and items, on the training device."""
        prev, fitted, scope = anchor.to(self.device), hat.to(self.device), self.config.scope
        return Side.of(prev.user, fitted.user, scope), Side.of(prev.item, fitted.item, scope)

    def _merge(self, lineage: Lineage, anchor: MFWeights, hat: MFWeights) -> MFWeights:
        users, items = self._sides(anchor, hat)
        transfers = lineage.transfers
        return MFWeights(users.table(transfers.user), items.table(transfers.item)).to("cpu")

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        counts = ("boundaries", "theta_updates", "promotions", "rejections")
        return {
            "strategy": self.name,
            "config": asdict(self.config),
            "served": self.served.state_dict(),
            "learner": None if self.learner is None else self.learner.state_dict(),
            "same": self.same,
            "last": period_state(self.last),
            "seen": torch.from_numpy(self.seen.keys.copy()),
            "update_transfer": self.update_transfer,
            **{key: getattr(self, key) for key in counts},
            "rng": self.rng.bit_generator.state,
            "meta_rng": self.meta_rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "meta_generator": self.meta_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "served" in state:
            self.served.load_state_dict(state["served"])
        else:  # a checkpoint of one lineage (written before the check existed)
            self.served.load_state_dict(state)
        self.learner = None
        if self.config.meta.check:
            self.learner = self.served.copy()
            if state.get("learner") is not None:
                self.learner.load_state_dict(state["learner"])
        self.same = bool(state.get("same", True))
        self.last = period_from_state(state["last"])
        self.seen = SeenPairs(state["seen"].numpy())
        self.update_transfer = bool(state["update_transfer"])
        self.boundaries = int(state["boundaries"])
        self.theta_updates, self.promotions, self.rejections = (
            int(state.get(key, 0)) for key in ("theta_updates", "promotions", "rejections"))
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        if "meta_rng" in state:  # a checkpoint written before the meta step had its own draws
            self.meta_rng.bit_generator.state = state["meta_rng"]
            self.meta_generator.set_state(state["meta_generator"])
