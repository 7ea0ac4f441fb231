"""SMLREC_HYPER_FILE: the worker builds its strategy from the file ``smlrec tune`` wrote
for the log, falls back to the defaults without one, and a bad file stops start-up (a
retrain with the file's settings: test_worker_loop.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from worker_testkit import make_settings

from sml import hyperparameters as hp
from sml.baselines import FineTune
from sml.trainer import SMLStrategy
from worker.checkpoint import new_strategy

TUNED = {
    "pretrain": {"epochs": 2, "lr": 0.01},
    "methods": {
        "sml": {"fit": {"epochs": 1, "lr": 0.02}, "transfer": {"hidden": 16},
                "step_one": "own", "meta": {"check": False}},
        "fine_tune": {"fit": {"epochs": 2, "lr": 0.03}},
    },
}


@pytest.fixture
def hyper_file(tmp_path: Path) -> Path:
    path = tmp_path / "hyper.json"
    path.write_text(json.dumps(TUNED))
    return path


def test_the_strategy_follows_the_file(sqlite_url: str, tmp_path: Path, hyper_file: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path / "models", hyper_file=hyper_file)
    sml = new_strategy(settings)
    assert isinstance(sml, SMLStrategy)
    assert (sml.config.fit.epochs, sml.config.fit.lr) == (1, 0.02)
    assert sml.config.transfer.hidden == 16 and sml.config.step_one == "own"
    assert sml.learner is None  # check off: one lineage
    # what the file leaves out keeps its default, and the seed and dimension are the settings'
    assert sml.config.meta.lr == new_strategy(make_settings(sqlite_url, tmp_path)).config.meta.lr  # type: ignore[attr-defined]
    assert sml.config.mf.dim == 8 and sml.config.seed == settings.seed
    tune = new_strategy(settings, "fine_tune")
    assert isinstance(tune, FineTune)
    assert (tune.config.fit.epochs, tune.config.fit.lr) == (2, 0.03)
    # a method the file does not name runs on its defaults
    default = new_strategy(make_settings(sqlite_url, tmp_path), "spmf")
    assert new_strategy(settings, "spmf").config == default.config  # type: ignore[attr-defined]


DEFAULT_RATE = hp.DEFAULTS["sml"]["meta"]["lr"]


@pytest.mark.parametrize(
    ("sml", "checked", "rate"),
    [
        (None, True, DEFAULT_RATE),  # no file: the rate is a list nothing chose: checked
        ({"fit": {"epochs": 1}}, True, DEFAULT_RATE),
        ({"meta": {"lr": 1e-5}}, False, 1e-5),  # a rate given (as tune writes it) is trusted
        ({"meta_lrs": [1e-5]}, False, 1e-5),  # and so is a list of one: the rate trained
        ({"meta": {"check": False}}, False, DEFAULT_RATE),  # what the file says of the check
        ({"meta": {"lr": 1e-5, "check": True}}, True, 1e-5),
    ],
)
def test_the_check_guards_a_step_two_rate_nothing_chose(
    sqlite_url: str, tmp_path: Path, sml: dict | None, checked: bool, rate: float
) -> None:
    """The replay chooses SML's step-2 rate on validation walks and serves without the
    check; a live log has no validation walk, so unless a rate was chosen (or the file
    sets the check) a new Theta serves only once it has ranked a closing period better.
    A rate chosen is the rate Theta trains at, however the file names it."""
    hyper_file = None
    if sml is not None:
        hyper_file = tmp_path / "hyper.json"
        hyper_file.write_text(json.dumps({"sml": sml}))
    settings = make_settings(sqlite_url, tmp_path / "models", hyper_file=hyper_file)
    for name in ("sml", "sml_n"):  # a variant the file does not name follows SML's
        strategy = new_strategy(settings, name)
        assert isinstance(strategy, SMLStrategy)
        assert strategy.config.meta.check is checked
        assert (strategy.learner is not None) is checked
        assert strategy.config.meta.lr == rate


def test_the_worker_fits_step_one_as_the_file_chose(sqlite_url: str, tmp_path: Path) -> None:
    """One step-1 fit named is the fit used; with several (the defaults) SML's own."""
    hyper_file = tmp_path / "hyper.json"
    hyper_file.write_text(json.dumps({"sml": {"step_one_fits": ["fine_tune"]},
                                      "fine_tune": {"fit": {"epochs": 2, "lr": 0.03}}}))
    settings = make_settings(sqlite_url, tmp_path / "models", hyper_file=hyper_file)
    sml = new_strategy(settings)
    assert isinstance(sml, SMLStrategy)
    assert (sml.config.fit.epochs, sml.config.fit.lr) == (2, 0.03)
    default = new_strategy(make_settings(sqlite_url, tmp_path / "models"))
    assert isinstance(default, SMLStrategy)
    own = hp.DEFAULTS["sml"]["fit"]
    assert (default.config.fit.epochs, default.config.fit.lr) == (own["epochs"], own["lr"])


@pytest.mark.parametrize(("sml", "window"), [
    (None, 1),  # several windows and no walk to choose: the closing period, the paper's
    ({"step_one_window": 2}, 2),  # as smlrec tune writes a chosen window
    ({"step_one_windows": [2]}, 2),
])
def test_the_worker_fits_step_one_on_the_window_the_file_chose(
    sqlite_url: str, tmp_path: Path, sml: dict | None, window: int
) -> None:
    hyper_file = None
    if sml is not None:
        hyper_file = tmp_path / "hyper.json"
        hyper_file.write_text(json.dumps({"sml": sml}))
    strategy = new_strategy(make_settings(sqlite_url, tmp_path / "models", hyper_file=hyper_file))
    assert isinstance(strategy, SMLStrategy)
    assert strategy.config.step_one_window == window


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"sml": {"step_one": "both"}}), "step_one must be one of"),
        (json.dumps({"sml": {"step_one_window": 3}}), "step_one_window must be one of"),
        (json.dumps({"sml": {"step_one_windows": [1, 5]}}), "step_one_window must be one of"),
        (json.dumps({"sml": {"step_one_history": -5}}), "step_one_history must be a number"),
        (json.dumps({"nope": {}}), "unknown methods nope"),
        # a misspelt setting must not fall back to its default without a word
        (json.dumps({"sml": {"meta_lr": [1e-5]}}), "sml: unknown settings meta_lr"),
        (json.dumps({"fine_tune": {"reservoir_size": 10}}), "unknown settings reservoir_size"),
        (json.dumps({"popularity": {"fit": {}}}), "popularity: unknown settings fit"),
    ],
)
def test_a_bad_file_fails_start_up_naming_the_variable(
    sqlite_url: str, tmp_path: Path, content: str, fault: str
) -> None:
    path = tmp_path / "hyper.json"
    path.write_text(content)
    with pytest.raises(ValidationError) as error:
        make_settings(sqlite_url, tmp_path / "models", hyper_file=path)
    assert "SMLREC_HYPER_FILE" in str(error.value) and fault in str(error.value)
    with pytest.raises(ValidationError, match="No such file"):
        make_settings(sqlite_url, tmp_path / "models", hyper_file=tmp_path / "missing.json")
