"""Strategies by name: what the replay's --methods and the worker's SMLREC_STRATEGY accept."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import Tensor

from sml import hyperparameters as hp
from sml.baselines import SPMF, BaselineConfig, FineTune, FullRetrain, Popularity
from sml.strategy import Strategy
from sml.trainer import VARIANT_NAMES, SMLConfig, SMLStrategy

SML_VARIANTS = VARIANT_NAMES
BASELINES = ("full_retrain", "fine_tune", "spmf", "popularity")
ALL_METHODS = SML_VARIANTS + BASELINES


def make_strategy(
    name: str,
    *,
    dim: int = 64,
    seed: int = 0,
    sml: SMLConfig | None = None,
    baseline: BaselineConfig | None = None,
) -> Strategy:
    """A fresh strategy with the replay-tuned hyper-parameters (``sml.hyperparameters``);
    ``sml``/``baseline`` replace them."""
    if name in SML_VARIANTS:
        base = sml or hp.sml_config(hp.DEFAULTS[name], dim, seed)
        sml_strategy = SMLStrategy(replace(base.for_variant(name), seed=seed), name=name)
        if name == "sml_frozen":  # Theta stays the fine-tune start: what learning it adds
            sml_strategy.set_update_transfer(False)
        return sml_strategy
    default = hp.baseline_config(hp.DEFAULTS.get(name, {}), dim, seed)
    config = replace(baseline or default, seed=seed)
    classes: dict[str, Any] = {
        "fine_tune": FineTune,
        "full_retrain": FullRetrain,
        "spmf": SPMF,
        "popularity": Popularity,
    }
    if name not in classes:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(ALL_METHODS)}")
    strategy: Strategy = classes[name](config)
    return strategy


def transfer_state(strategy: Strategy, *, learner: bool = False) -> dict[str, Tensor] | None:
    """Theta alone (None for strategies without a transfer): the served lineage's, or with
    ``learner`` the one trained at every boundary (the served one without the check)."""
    if isinstance(strategy, SMLStrategy):
        lineage = (strategy.learner or strategy.served) if learner else strategy.served
        return {k: v.detach().clone() for k, v in lineage.transfers.state_dict().items()}
    return None
