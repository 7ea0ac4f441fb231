"""Hyper-parameters of each replay method, as plain JSON-able dicts, and their builders.

The values in DEFAULTS were chosen on the validation periods (14-15) of
MovieLens-100K with ``python -m bench.tune`` (which never runs past period 15);
the README lists them. Anything not given falls back to the dataclass defaults.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any

from sml.baselines import BaselineConfig
from sml.fit import FitConfig
from sml.model import MFConfig
from sml.trainer import MetaConfig, SMLConfig
from sml.transfer import TransferConfig

Hyper = dict[str, Any]

PRETRAIN: Hyper = {"epochs": 20, "lr": 0.01, "l2": 1e-4, "n_negatives": 1, "batch_size": 1024}

# Validation Recall@20 of each choice (periods 14-15; popularity scores 0.7135 there):
# fine-tune 0.7094, SPMF 0.7064, full-retrain 0.6888, SML 0.7133. The grids are in
# bench/tune.py; SML's offline passes, rounds, meta learning rate and L2 and the
# transfer's initialisation were then varied one at a time around its best point.
_FINE_TUNE: Hyper = {"fit": {"epochs": 5, "lr": 0.01, "l2": 1e-3, "n_negatives": 1}}
_SPMF: Hyper = {
    "fit": {"epochs": 5, "lr": 0.005, "l2": 1e-3, "n_negatives": 1},
    "reservoir_size": 5_000,
}
_FULL_RETRAIN: Hyper = {"fit": {"epochs": 3, "lr": 0.005, "l2": 1e-3, "n_negatives": 1}}
_SML: Hyper = {
    "fit": {"epochs": 5, "lr": 0.01, "l2": 1e-3, "n_negatives": 1, "batch_size": 1024},
    "meta": {"rounds": 1, "epochs": 1, "lr": 1e-4, "l2": 1e-4, "batch_size": 1024},
    "transfer": {"kind": "cnn", "init": "fine_tune"},
    "offline_passes": 2,
}

DEFAULTS: dict[str, Hyper] = {
    "full_retrain": _FULL_RETRAIN,
    "fine_tune": _FINE_TUNE,
    "spmf": _SPMF,
    "popularity": {},
    **{name: _SML for name in ("sml", "sml_s", "sml_n", "sml_cnn", "sml_fc", "sml_fp")},
}


def _build(cls: Any, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**values)


def fit_config(values: dict[str, Any]) -> FitConfig:
    config: FitConfig = _build(FitConfig, values)
    return config


def sml_config(hyper: Hyper, dim: int, seed: int) -> SMLConfig:
    return SMLConfig(
        mf=MFConfig(dim=dim),
        fit=fit_config(hyper.get("fit", {})),
        meta=_build(MetaConfig, hyper.get("meta", {})),
        transfer=_build(TransferConfig, hyper.get("transfer", {})),
        seed=seed,
    )


def baseline_config(hyper: Hyper, dim: int, seed: int) -> BaselineConfig:
    config = BaselineConfig(mf=MFConfig(dim=dim), fit=fit_config(hyper.get("fit", {})), seed=seed)
    if "reservoir_size" in hyper:
        config = replace(config, reservoir_size=int(hyper["reservoir_size"]))
    return config


def resolved(name: str, hyper: Hyper, dim: int, seed: int) -> Hyper:
    """Every hyper-parameter a run used, defaults filled in (for results.json)."""
    if name.startswith("sml"):
        out = asdict(sml_config(hyper, dim, seed).for_variant(name))
        out["offline_passes"] = int(hyper.get("offline_passes", 1))
        return out
    if name == "popularity":
        return {}
    return asdict(baseline_config(hyper, dim, seed))
