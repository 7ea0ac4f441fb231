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
    device: str = "cpu",
) -> Strategy:
    """A fresh strategy with the replay-tuned hyper-parameters (``sml.hyperparameters``);
    ``sml``/``baseline`` replace them. It trains on ``device`` (resolved: ``cpu`` or
    ``cuda``, see :mod:`sml.device`)."""
    if name in SML_VARIANTS:
        base = (sml or hp.sml_config(hp.DEFAULTS[name], dim, seed)).for_variant(name)
        sml_strategy = SMLStrategy(
            replace(base, seed=seed, fit=replace(base.fit, device=device)), name=name)
        if name == "sml_frozen":  # Theta stays the fine-tune start: what learning it adds
            sml_strategy.set_update_transfer(False)
        return sml_strategy
    config = baseline or hp.baseline_config(hp.DEFAULTS.get(name, {}), dim, seed)
    config = replace(config, seed=seed, fit=replace(config.fit, device=device))
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


def from_hyper(name: str, hyper: hp.Hyper, *, dim: int, seed: int, device: str = "cpu"
               ) -> Strategy:
    """A fresh strategy from its hyper-parameters as :func:`sml.hyperparameters.for_method`
    gives them."""
    if name in SML_VARIANTS:
        return make_strategy(name, dim=dim, seed=seed, sml=hp.sml_config(hyper, dim, seed),
                             device=device)
    return make_strategy(name, dim=dim, seed=seed, baseline=hp.baseline_config(hyper, dim, seed),
                         device=device)


def transfer_state(strategy: Strategy, *, learner: bool = False) -> dict[str, Tensor] | None:
    """Theta alone (None for strategies without a transfer): the served lineage's, or with
    ``learner`` the one trained at every boundary (the served one without the check)."""
    if isinstance(strategy, SMLStrategy):
        lineage = (strategy.learner or strategy.served) if learner else strategy.served
        return {k: v.detach().to("cpu", copy=True)
                for k, v in lineage.transfers.state_dict().items()}
    return None
