"""Sequential Meta-Learning (Zhang et al., SIGIR 2020, Algorithm 1).

At period t the strategy holds W_{t-1} (served during t) and, from the previous
boundary, W_{t-2}, W-hat_{t-1}, D_{t-1} and Theta. When D_t closes:

1. meta step for t-1 (now that its next period D_t is here): R rounds of
   {step 1: fit W-hat_{t-1} on D_{t-1} through the transfer, Theta fixed;
    step 2: fit Theta on D_t with W-hat_{t-1} fixed}, then the refined
   W_{t-1} = f_Theta(W_{t-2}, W-hat_{t-1});
2. step 1 for t: W-hat_t starts from W_{t-1}, is fit on D_t through the
   transfer with Theta fixed, and W_t = f_Theta(W_{t-1}, W-hat_t) is served.

The first round's step 1 of the meta step is skipped: W-hat_{t-1} was fit under
the same Theta at the previous boundary, so it would change nothing.

Variants: ``sml_n`` trains Theta on D_{t-1} itself (no next-period objective);
``sml_fp`` fits W-hat_t on its own MF loss instead of through the transfer;
SML-S is this strategy with ``set_update_transfer(False)`` in test periods;
SML-CNN and SML-FC are transfer kinds (see ``sml.transfer``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sml.fit import Batch, FitConfig, SeenPairs, fit_mf, run_epochs
from sml.model import MFConfig, MFWeights, bce_loss
from sml.strategy import PeriodData, PeriodLike, concat_periods
from sml.transfer import Transfer, TransferConfig, TransferPair

Variant = Literal["sml", "sml_n", "sml_fp"]


@dataclass(frozen=True)
class MetaConfig:
    rounds: int = 1  # R
    epochs: int = 2  # epochs over the next period per step 2
    lr: float = 1e-3
    l2: float = 1e-4  # lambda_2, on Theta
    batch_size: int = 1024


@dataclass(frozen=True)
class SMLConfig:
    mf: MFConfig = field(default_factory=MFConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    fit: FitConfig = field(default_factory=FitConfig)  # step 1 (and the cold start)
    meta: MetaConfig = field(default_factory=MetaConfig)  # step 2
    variant: Variant = "sml"
    seed: int = 0

    def for_variant(self, name: str) -> SMLConfig:
        """This configuration as one of the paper's variants (SML-S differs only in how
        it is driven: no transfer update in test periods)."""
        if name in ("sml", "sml_s"):
            return self
        if name == "sml_n":
            return replace(self, variant="sml_n")
        if name == "sml_fp":
            return replace(self, variant="sml_fp")
        if name == "sml_cnn":
            return replace(self, transfer=replace(self.transfer, kind="no_cnn"))
        if name == "sml_fc":
            return replace(self, transfer=replace(self.transfer, kind="no_fc"))
        raise ValueError(f"unknown SML variant {name!r}")


def transfer_rows(transfer: Transfer, prev: Tensor, new: Tensor, chunk: int = 65536) -> Tensor:
    """f applied to whole tables without autograd: (N, D), (N, D) -> (N, D)."""
    with torch.no_grad():
        return torch.cat(
            [transfer(prev[s : s + chunk], new[s : s + chunk]) for s in range(0, len(new), chunk)]
        )


def merged_batch_loss(
    transfers: TransferPair, anchor: MFWeights, hat: MFWeights, batch: Batch
) -> Tensor:
    """L_0 of f_Theta(anchor, hat) on a batch, applying f to the distinct rows only.

    A user beyond the tables (first seen in the objective period) is scored as
    serving scores such a user: a zero row, so only the item biases rank for them.
    """
    users, pos, neg = batch
    u_rows, u_inv = torch.unique(users, return_inverse=True)
    i_rows, i_inv = torch.unique(torch.cat([pos, neg.flatten()]), return_inverse=True)
    known = u_rows < anchor.n_users
    u = torch.zeros(u_rows.shape[0], anchor.user.shape[1])  # (U, D)
    if bool(known.any()):
        rows = u_rows[known]
        u = u.index_put(
            (known.nonzero().squeeze(1),), transfers.user(anchor.user[rows], hat.user[rows])
        )
    i = transfers.item(anchor.item[i_rows], hat.item[i_rows])  # (I, D)
    b = users.shape[0]
    pos_rows = i[i_inv[:b]]  # (B, D)
    neg_rows = i[i_inv[b:]].view(b, neg.shape[1], -1)  # (B, n, D)
    return bce_loss(u[u_inv], pos_rows, neg_rows)


class SMLStrategy:
    def __init__(self, config: SMLConfig, name: str = "sml") -> None:
        self.name = name
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        with torch.random.fork_rng():  # Theta's initial value follows the seed too
            torch.manual_seed(config.seed)
            self.transfers = TransferPair(config.mf.dim + 1, config.transfer)
        self.theta_optimizer = torch.optim.Adam(self.transfers.parameters(), lr=config.meta.lr)
        self.seen = SeenPairs()
        self.update_transfer = True
        self.current: MFWeights | None = None  # W_{t-1}: served now
        self.anchor: MFWeights | None = None  # W_{t-2}: the "previous" W_{t-1} was built from
        self.hat: MFWeights | None = None  # W-hat_{t-1}
        self.last: PeriodData | None = None  # D_{t-1}
        self.boundaries = 0

    @property
    def model(self) -> MFWeights | None:
        return self.current

    def set_update_transfer(self, enabled: bool) -> None:
        self.update_transfer = enabled

    # -- the period boundary ------------------------------------------------------------
    def warm_start(self, base: MFWeights, history: Sequence[PeriodLike]) -> None:
        """Start from a plain MF trained on ``history``: it plays W-hat of the last period,
        and the initialisation plays the model before it (a new row's "previous" value)."""
        data = concat_periods(history)
        self.seen = SeenPairs()
        self.seen.add(data.users, data.items)
        self.current = base.detach()
        self.hat = base.detach()
        self.anchor = MFWeights.init(self.config.mf, base.n_users, base.n_items, self.generator)
        last = history[-1]
        self.last = PeriodData(last.users, last.items, base.n_users, base.n_items)

    def boundary(self, period: PeriodLike) -> MFWeights:
        data = PeriodData(period.users, period.items, period.n_users, period.n_items)
        self.seen.add(data.users, data.items)
        if self.current is None:
            start = MFWeights.init(self.config.mf, data.n_users, data.n_items, self.generator)
            base = fit_mf(
                start, data.users, data.items, seen=self.seen, config=self.config.fit, rng=self.rng
            )
            self.current, self.hat = base, base
            self.anchor = MFWeights.init(self.config.mf, data.n_users, data.n_items, self.generator)
        else:
            if self.update_transfer and self.hat is not None:
                self._meta_step(data)
            self._step_one(data)
        self.last = data
        self.boundaries += 1
        assert self.current is not None
        return self.current

    def _meta_step(self, next_period: PeriodData) -> None:
        assert self.anchor is not None and self.hat is not None and self.last is not None
        objective = self.last if self.config.variant == "sml_n" else next_period
        for r in range(self.config.meta.rounds):
            if r > 0 and self.config.variant != "sml_fp":
                self.hat = self._fit_hat(self.anchor, self.hat, self.last)
            self._step_two(objective)
        self.current = self._merge(self.anchor, self.hat)

    def _step_one(self, data: PeriodData) -> None:
        assert self.current is not None
        prev = self.current.grow(data.n_users, data.n_items, self.config.mf, self.generator)
        hat = self._fit_hat(prev, prev, data)
        self.anchor, self.hat = prev, hat
        self.current = self._merge(prev, hat)

    def _fit_hat(self, anchor: MFWeights, start: MFWeights, data: PeriodData) -> MFWeights:
        """Step 1: W-hat on D through the transfer (Theta fixed); SML-FP: on its own loss."""
        fit = self.config.fit
        if self.config.variant == "sml_fp":
            return fit_mf(start, data.users, data.items, seen=self.seen, config=fit, rng=self.rng)
        hat = MFWeights(
            start.user.detach().clone().requires_grad_(True),
            start.item.detach().clone().requires_grad_(True),
        )
        self.transfers.requires_grad_(False)

        def loss_of(batch: Batch) -> Tensor:
            users, pos, neg = batch
            merged = merged_batch_loss(self.transfers, anchor, hat, batch)
            reg = (
                hat.user[users].square().sum()
                + hat.item[pos].square().sum()
                + hat.item[neg].square().sum()
            ) / users.shape[0]
            return merged + fit.l2 * reg

        try:
            run_epochs(
                [hat.user, hat.item],
                loss_of,
                data.users,
                data.items,
                n_items=data.n_items,
                seen=self.seen,
                config=fit,
                rng=self.rng,
            )
        finally:
            self.transfers.requires_grad_(True)
        return hat.detach()

    def _step_two(self, objective: PeriodData) -> None:
        """Step 2: Theta on the objective period with W-hat fixed.

        Pairs of items the model does not know yet are left out (nothing can score
        them); users it does not know stay in, scored by the item biases alone, as
        serving scores them: the merged model must serve them well too.
        """
        assert self.anchor is not None and self.hat is not None
        anchor, hat, meta = self.anchor, self.hat, self.config.meta
        keep = objective.items < hat.n_items
        users, items = objective.users[keep], objective.items[keep]
        if users.shape[0] == 0:
            return
        params = list(self.transfers.parameters())

        def loss_of(batch: Batch) -> Tensor:
            reg = sum(p.square().sum() for p in params)
            return merged_batch_loss(self.transfers, anchor, hat, batch) + meta.l2 * reg

        config = FitConfig(
            epochs=meta.epochs,
            lr=meta.lr,
            n_negatives=self.config.fit.n_negatives,
            batch_size=meta.batch_size,
        )
        run_epochs(
            params,
            loss_of,
            users,
            items,
            n_items=hat.n_items,
            seen=self.seen,
            config=config,
            rng=self.rng,
            optimizer=self.theta_optimizer,
        )

    def _merge(self, anchor: MFWeights, hat: MFWeights) -> MFWeights:
        return MFWeights(
            transfer_rows(self.transfers.user, anchor.user, hat.user),
            transfer_rows(self.transfers.item, anchor.item, hat.item),
        )

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def weights(w: MFWeights | None) -> dict[str, Tensor] | None:
            return None if w is None else w.state_dict()

        last = None
        if self.last is not None:
            last = {
                "users": torch.from_numpy(self.last.users.copy()),
                "items": torch.from_numpy(self.last.items.copy()),
                "n_users": self.last.n_users,
                "n_items": self.last.n_items,
            }
        return {
            "strategy": self.name,
            "config": _plain(asdict(self.config)),
            "current": weights(self.current),
            "anchor": weights(self.anchor),
            "hat": weights(self.hat),
            "last": last,
            # copies: a state dict is a snapshot, never a view of live training tensors
            "theta": {k: v.detach().clone() for k, v in self.transfers.state_dict().items()},
            "theta_optimizer": copy.deepcopy(self.theta_optimizer.state_dict()),
            "seen": torch.from_numpy(self.seen.keys.copy()),
            "update_transfer": self.update_transfer,
            "boundaries": self.boundaries,
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def weights(d: dict[str, Tensor] | None) -> MFWeights | None:
            return None if d is None else MFWeights.from_state_dict(d)

        self.current, self.anchor, self.hat = (
            weights(state["current"]),
            weights(state["anchor"]),
            weights(state["hat"]),
        )
        last = state["last"]
        self.last = (
            None
            if last is None
            else PeriodData(
                last["users"].numpy(),
                last["items"].numpy(),
                int(last["n_users"]),
                int(last["n_items"]),
            )
        )
        self.transfers.load_state_dict(state["theta"])
        self.theta_optimizer.load_state_dict(state["theta_optimizer"])
        self.seen = SeenPairs(state["seen"].numpy())
        self.update_transfer = bool(state["update_transfer"])
        self.boundaries = int(state["boundaries"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])


def _plain(value: Any) -> Any:
    """Dataclass dicts as plain nested dicts of str/int/float/bool (checkpoint-safe)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
