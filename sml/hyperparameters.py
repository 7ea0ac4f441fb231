"""Hyper-parameters of each replay method, as plain JSON-able dicts, and their builders.

The values in DEFAULTS and PRETRAIN were chosen on MovieLens-100K by ``smlrec tune``
(16 settings per method, 6 for the shared pretraining; validation periods 14-15,
never a test period); the README lists them. The worker's strategies use them too.
Another log deserves its own: ``smlrec tune --dataset ... --out hyper.json``, then
``smlrec replay --hyper hyper.json``. Anything not given falls back to the
dataclass defaults.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args

from sml.baselines import BaselineConfig
from sml.fit import FitConfig
from sml.merge import Scope
from sml.model import MFConfig
from sml.trainer import (
    VARIANT_NAMES,
    HistoryDraw,
    MetaConfig,
    SMLConfig,
    StepOne,
    WarmAnchor,
)
from sml.transfer import TransferConfig

Hyper = dict[str, Any]

# Chosen by its Recall@20 on period 5, the first period a method serves it on: 0.7528
# (the earlier 20 epochs, lr 0.01, L2 1e-4, 1 negative: 0.7268).
PRETRAIN: Hyper = {"epochs": 10, "lr": 0.0011, "l2": 0.015, "n_negatives": 4, "batch_size": 1024}

# Validation Recall@20 of each choice (periods 14-15): fine-tune 0.7135 (its defaults
# won), full-retrain 0.7117, SPMF 0.7078 (its defaults won), SML 0.7109.
_FINE_TUNE: Hyper = {"fit": {"epochs": 5, "lr": 0.01, "l2": 1e-3, "n_negatives": 1}}
_SPMF: Hyper = {
    "fit": {"epochs": 5, "lr": 0.005, "l2": 1e-3, "n_negatives": 1},
    "reservoir_size": 5_000,
}
_FULL_RETRAIN: Hyper = {"fit": {"epochs": 1, "lr": 0.028, "l2": 0.074, "n_negatives": 4}}
# Step 1 on W-hat's own loss and no proven-lineage check: each chosen on the validation
# periods (14-15, seeds 0-1, step-2 rate chosen as below) of two logs. Recall@20 on
# MovieLens-100K / the returning-heavy synthetic profile: through the transfer with the
# check 0.7006 / 0.5913, own loss with the check 0.7069 / 0.6003, own loss without it
# 0.7122 / 0.5987, at less than half the CPU of a boundary (docs/method.md).
_SML: Hyper = {
    "fit": {"epochs": 5, "lr": 0.0035, "l2": 2.1e-4, "n_negatives": 2, "batch_size": 1024},
    "step_one": "own",
    "meta": {
        "rounds": 2,
        "epochs": 2,
        "lr": 1.2e-4,
        "l2": 1e-4,
        "batch_size": 1024,
        "check": False,
        "n_negatives": 1,
        "keep_optimizer": False,
        "first_seen": "skip",
    },
    "transfer": {"kind": "cnn", "init": "fine_tune", "hidden": 128},
    "offline_passes": 2,
    # step 2's learning rate is chosen among these on the log's validation periods (the
    # replay walks once per rate, see sml.replay); 0 keeps Theta at its fine-tune start
    "meta_lrs": [0.0, 1e-5, 1e-4],
    # and step 1's fit settings among these: "own" is `fit` above, "fine_tune" is what
    # fine-tune uses on the same log (step 1 on its own loss is fine-tuning W-hat)
    "step_one_fits": ["own", "fine_tune"],
    # and how many pairs drawn from all seen so far step 1 also fits, in multiples of the
    # closing period's rows, drawn anew for each epoch (validation R@20, seeds 0-1, SML's
    # own fit; synthetic-returning, two periods at 1e-5: one period's worth 0.6220, two
    # 0.6316, four 0.6286; MovieLens-100K, one period at 1e-4: none 0.7122, one 0.7163,
    # two 0.7109, four 0.6932): the log decides
    "step_one_histories": [0.0, 1.0, 2.0],
    # and the periods step 1 fits W-hat on: the closing one, or it and the one before
    # (validation R@20, seeds 0-1, each choosing fit and rate: synthetic-returning 0.6020
    # with one period, 0.6078-0.6089 with two; MovieLens-100K 0.7108-0.7135 with one,
    # 0.7068-0.7083 with two: which one pays depends on the log)
    "step_one_windows": [1, 2],
}

DEFAULTS: dict[str, Hyper] = {
    "full_retrain": _FULL_RETRAIN,
    "fine_tune": _FINE_TUNE,
    "spmf": _SPMF,
    "popularity": {},
    **{name: _SML for name in VARIANT_NAMES},
}


def _build(cls: Any, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**values)


def fit_config(values: dict[str, Any]) -> FitConfig:
    if "device" in values:
        raise ValueError("device is not a hyper-parameter: give --device or SMLREC_DEVICE")
    config: FitConfig = _build(FitConfig, values)
    return config


def _one_of(hyper: Hyper, key: str, kind: Any) -> Any:
    allowed = get_args(kind)
    value = hyper.get(key, allowed[0])
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(map(repr, allowed))}, not {value!r}")
    return value


def sml_config(hyper: Hyper, dim: int, seed: int) -> SMLConfig:
    return SMLConfig(
        mf=MFConfig(dim=dim),
        fit=fit_config(hyper.get("fit", {})),
        meta=_build(MetaConfig, hyper.get("meta", {})),
        transfer=_build(TransferConfig, hyper.get("transfer", {})),
        scope=_one_of(hyper, "scope", Scope),
        warm_anchor=_one_of(hyper, "warm_anchor", WarmAnchor),
        step_one=_one_of(hyper, "step_one", StepOne),
        step_one_window=_window(hyper.get("step_one_window", 1)),
        step_one_history=_history(hyper.get("step_one_history", 0.0)),
        history_draw=_one_of(hyper, "history_draw", HistoryDraw),
        seed=seed,
    )


WINDOWS = (1, 2)  # the periods SML's step 1 may fit W-hat on


def _history(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
        raise ValueError(f"step_one_history must be a number from 0 to 10 (times the "
                         f"closing period's rows), not {value!r}")
    return float(value)


def _window(value: Any) -> int:
    if isinstance(value, bool) or value not in WINDOWS:
        raise ValueError(f"step_one_window must be one of {WINDOWS}, not {value!r}")
    return int(value)


SPMF_KEYS = ("reservoir_size", "reservoir_draws", "rank_sharpness")
SML_KEYS = (
    "fit", "meta", "transfer", "scope", "warm_anchor", "step_one", "offline_passes",
    "meta_lrs", "step_one_fits", "fine_tune_fit", "step_one_window", "step_one_windows",
    "step_one_history", "step_one_histories", "history_draw",
)


def known_keys(name: str) -> set[str]:
    """The top-level settings a method's hyper-parameters may hold (a name a hyper file
    misspells would otherwise fall back to its default without a word)."""
    if name in VARIANT_NAMES:
        return set(SML_KEYS)
    if name == "popularity":
        return set()
    return {"fit", *(SPMF_KEYS if name == "spmf" else ())}


def baseline_config(hyper: Hyper, dim: int, seed: int) -> BaselineConfig:
    config = BaselineConfig(mf=MFConfig(dim=dim), fit=fit_config(hyper.get("fit", {})), seed=seed)
    return replace(config, **{key: hyper[key] for key in SPMF_KEYS if key in hyper})


def for_method(name: str, overrides: dict[str, Hyper] | None = None) -> Hyper:
    """The method's defaults with ``overrides[name]`` laid over them; a nested section
    (``fit``, ``meta``, ``transfer``) is merged key by key, not replaced whole. An SML
    variant the overrides do not name takes SML's: an ablation (or SML-0) differs from
    SML in what it names, not in settings tuned for SML alone."""
    given = _given(name, overrides)
    out = copy.deepcopy(DEFAULTS[name])
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    lr = given.get("meta", {}).get("lr") if isinstance(given.get("meta"), dict) else None
    if lr is not None and "meta_lrs" not in given and "meta_lrs" in out:
        out["meta_lrs"] = [lr]  # a step-2 rate given is the rate used, not one to choose among
    if "fit" in given and "step_one_fits" not in given and "step_one_fits" in out:
        out["step_one_fits"] = ["own"]  # so are step 1's fit settings
    for one, listed in (("step_one_window", "step_one_windows"),  # and its window
                        ("step_one_history", "step_one_histories")):  # and history sample
        if one in given and listed not in given and listed in out:
            out[listed] = [given[one]]
    if "fine_tune" in out.get("step_one_fits", []):
        out["fine_tune_fit"] = for_method("fine_tune", overrides)["fit"]
    # and a list of one value is the value used: {"meta_lrs": [1e-5]} trains at 1e-5
    for _, listed, setting in CHOICE_AXES:
        values = listed(name, out)
        if len(values) == 1:
            out = setting(out, values[0])
    return out


def for_live(name: str, overrides: dict[str, Hyper] | None = None) -> Hyper:
    """What a live log's worker runs: :func:`for_method`, with SML's proven-lineage check
    turned on where the step-2 rate is still a list to choose from and nothing set the
    check. The replay and the tuner choose the rate by walking each candidate through the
    validation periods; a live log has no such walk, so the worker trains Theta at
    ``meta.lr`` and serves a new Theta only once it has ranked a closing period better."""
    out = for_method(name, overrides)
    meta = _given(name, overrides).get("meta")
    if len(theta_lrs(name, out)) > 1 and not (isinstance(meta, dict) and "check" in meta):
        out["meta"] = {**out.get("meta", {}), "check": True}
    # where several fits, windows or history samples are named (one named is settled by
    # for_method), step 1 takes `fit` ("own"), the closing period alone and no sample
    live = {"fit": "own", "window": 1, "history": 0.0}
    for key, listed, setting in CHOICE_AXES:
        if key in live and len(listed(name, out)) > 1:
            out = setting(out, live[key])
    return out


def _given(name: str, overrides: dict[str, Hyper] | None) -> Hyper:
    """What ``overrides`` sets for ``name``: an SML variant it does not name takes SML's."""
    overrides = overrides or {}
    source = "sml" if name not in overrides and name in VARIANT_NAMES else name
    return overrides.get(source, {})


@dataclass(frozen=True)
class HyperFile:
    """What ``smlrec tune`` writes and ``smlrec replay --hyper`` reads: the shared
    pretraining's fit and each method's hyper-parameters (over the defaults)."""

    pretrain: Hyper | None
    methods: dict[str, Hyper]


def read_hyper_file(path: Path, dim: int) -> HyperFile:
    """``{"pretrain": {...}, "methods": {method: {...}}}`` (or just ``{method: {...}}``),
    checked by building every configuration it names; ValueError says what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if "methods" in raw:
        methods, pretrain = raw["methods"], raw.get("pretrain")
    else:
        methods, pretrain = raw, None
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ValueError(f"{path}: expected {{method: {{...}}}} under \"methods\"")
    unknown = sorted(set(methods) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown methods {','.join(unknown)}")
    if pretrain is not None:
        if not isinstance(pretrain, dict):
            raise ValueError(f"{path}: \"pretrain\" must be an object of fit settings")
        try:
            fit_config(pretrain)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: pretrain: {exc}") from None
    for name in methods:
        unknown = sorted(set(methods[name]) - known_keys(name))
        if unknown:
            raise ValueError(f"{path}: {name}: unknown settings {', '.join(unknown)}")
        try:
            resolved(name, for_method(name, methods), dim, 0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {name}: {exc}") from None
    return HyperFile(pretrain, methods)


def theta_lrs(name: str, hyper: Hyper) -> list[float]:
    """The step-2 learning rates an SML method chooses among on the validation periods
    (``meta_lrs``); [] when it has none to choose (a baseline, or SML-0, whose Theta is
    never trained). ValueError if the list is not a list of distinct rates >= 0."""
    return [] if name == "sml_frozen" else _listed(name, hyper, "meta_lrs", _rate, "rates")


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"meta_lrs must hold learning rates >= 0, not {value!r}")
    return float(value)


def with_theta_lr(hyper: Hyper, rate: float) -> Hyper:
    """``hyper`` with step 2 at ``rate`` and no step-2 rate left to choose."""
    out = copy.deepcopy(hyper)
    out["meta"] = {**out.get("meta", {}), "lr": rate}
    out["meta_lrs"] = [rate]
    return out


FIT_SOURCES = ("own", "fine_tune")


def step_one_fits(name: str, hyper: Hyper) -> list[str]:
    """Step 1's fit settings an SML method chooses among on the validation periods
    (``step_one_fits``: "own" is its ``fit``, "fine_tune" fine-tune's on the same log);
    [] when it has none to choose. ValueError if the list names anything else."""
    if not name.startswith("sml") or "step_one_fits" not in hyper:
        return []
    fits = hyper["step_one_fits"]
    if not isinstance(fits, list) or not fits or not set(fits) <= set(FIT_SOURCES) or (
        len(set(fits)) != len(fits)
    ):
        raise ValueError(
            f"step_one_fits must be a non-empty list of distinct {', '.join(FIT_SOURCES)}, "
            f"not {fits!r}"
        )
    return list(fits)


def with_step_one_fit(hyper: Hyper, source: str) -> Hyper:
    """``hyper`` with step 1 fit as ``source`` says and no fit left to choose."""
    out = copy.deepcopy(hyper)
    if source == "fine_tune":
        out["fit"] = dict(out["fine_tune_fit"])
    out["step_one_fits"] = ["own"]
    out.pop("fine_tune_fit", None)
    return out


def _listed(name: str, hyper: Hyper, key: str, each: Any, what: str) -> list[Any]:
    """The values under ``key`` an SML method chooses among, each checked by ``each``;
    [] when it has none to choose. ValueError unless a non-empty list of distinct ones."""
    if not name.startswith("sml") or key not in hyper:
        return []
    values = hyper[key]
    if not isinstance(values, list) or not values or len(set(values)) != len(values):
        raise ValueError(f"{key} must be a non-empty list of distinct {what}, not {values!r}")
    return [each(v) for v in values]


def step_one_windows(name: str, hyper: Hyper) -> list[int]:
    """The periods step 1 may fit W-hat on that an SML method chooses among on the
    validation periods (``step_one_windows``); [] when it has none to choose."""
    return _listed(name, hyper, "step_one_windows", _window, str(WINDOWS))


def with_step_one_window(hyper: Hyper, window: int) -> Hyper:
    """``hyper`` with step 1 fit on ``window`` periods and no window left to choose."""
    return {**copy.deepcopy(hyper), "step_one_window": window, "step_one_windows": [window]}


def step_one_histories(name: str, hyper: Hyper) -> list[float]:
    """The history samples (multiples of the closing period's rows) step 1 may add that
    an SML method chooses among on the validation periods; [] when it has none."""
    return _listed(name, hyper, "step_one_histories", _history, "numbers")


def with_step_one_history(hyper: Hyper, history: float) -> Hyper:
    """``hyper`` with step 1's history sample set and none left to choose."""
    return {**copy.deepcopy(hyper), "step_one_history": history,
            "step_one_histories": [history]}


# what an SML method chooses among on the validation periods: (its key in a candidate's
# label, the values listed, the hyper-parameters with one of them set)
CHOICE_AXES: tuple[tuple[str, Any, Any], ...] = (
    ("fit", step_one_fits, with_step_one_fit), ("window", step_one_windows, with_step_one_window),
    ("history", step_one_histories, with_step_one_history), ("lr", theta_lrs, with_theta_lr))


def candidates(name: str, hyper: Hyper) -> list[tuple[dict[str, Any], Hyper]]:
    """Each combination of step-1 fit, window and history sample and step-2 rate an SML method
    chooses among on the validation periods (``sml.replay`` walks each), as (what it
    sets, the hyper-parameters with nothing left to choose); one entry when there is
    nothing to choose, with any list of one value set as :func:`for_method` sets it."""
    grid: list[tuple[dict[str, Any], Hyper]] = [({}, hyper)]
    for key, listed, setting in CHOICE_AXES:  # a list of one value is set as well
        grid = [({**label, key: value}, setting(chosen, value))
                for label, chosen in grid for value in listed(name, hyper)] or grid
    return grid


def resolved(name: str, hyper: Hyper, dim: int, seed: int) -> Hyper:
    """Every hyper-parameter a run used, defaults filled in (for results.json)."""
    if name.startswith("sml"):
        out = asdict(sml_config(hyper, dim, seed).for_variant(name))
        out["offline_passes"] = int(hyper.get("offline_passes", 1))
        for key, listed in (("meta_lrs", theta_lrs), ("step_one_fits", step_one_fits),
                            ("step_one_windows", step_one_windows),
                            ("step_one_histories", step_one_histories)):
            values = listed(name, hyper)
            if values:
                out[key] = values
        return out
    if name == "popularity":
        return {}
    return asdict(baseline_config(hyper, dim, seed))
