"""The tuner: draws within its spaces, never runs past validation, writes what the replay
reads, keeps what it did not tune, and reports bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from sml import hyperparameters as hp
from sml import options, replay, tune
from sml.replay_data import ReplayData
from sml.synthetic import SyntheticConfig, synthetic_drift
from sml.tune import SPACES, Choice, LogUniform, draw, flat, neighbour, nest

TINY = ["--dataset", "synthetic", "--dim", "8", "--trials", "2", "--pretrain-trials", "2"]


@pytest.fixture(autouse=True)
def quick_pretraining(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "sml.hyperparameters.PRETRAIN",
        {"epochs": 2, "lr": 0.01, "l2": 1e-4, "n_negatives": 1, "batch_size": 1024},
    )


@pytest.fixture
def quick_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """One-epoch defaults and a narrow SML space: the tuner's walk, not its budget."""
    monkeypatch.setitem(hp.DEFAULTS, "fine_tune", {"fit": {"epochs": 1}})
    monkeypatch.setitem(
        hp.DEFAULTS,
        "sml",
        {"fit": {"epochs": 1}, "transfer": {"hidden": 16}, "offline_passes": 1},
    )
    monkeypatch.setitem(tune.SPACES, "sml", {"meta.lr": LogUniform(1e-4, 1e-2)})


def test_draws_stay_in_their_space_and_build() -> None:
    rng = np.random.default_rng(0)
    for name, space in SPACES.items():
        for _ in range(20):
            hyper = draw(space, rng)
            for path, dimension in space.items():
                section, _, field = path.rpartition(".")
                value = (hyper[section] if section else hyper)[field]
                if isinstance(dimension, Choice):
                    assert value in dimension.values
                else:
                    assert value == 0.0 or dimension.low * 0.95 <= value <= dimension.high * 1.05
            hp.resolved(name, hp.for_method(name, {name: hyper}), 8, 0)  # a valid config


def test_a_log_uniform_range_draws_zero_only_when_asked() -> None:
    rng = np.random.default_rng(1)
    assert min(LogUniform(1e-3, 1e-2).draw(rng) for _ in range(200)) > 0
    assert 0.0 in {LogUniform(1e-3, 1e-2, zero=0.5).draw(rng) for _ in range(50)}


def test_a_local_step_redraws_one_or_two_parameters_of_the_best() -> None:
    rng = np.random.default_rng(2)
    space = SPACES["sml"]
    best = flat(draw(space, rng))
    assert nest(best) == draw(space, np.random.default_rng(2))  # flat and nest invert
    for _ in range(50):
        step = neighbour(space, best, rng)
        assert step.keys() == best.keys()
        assert 1 <= sum(step[k] != best[k] for k in best) <= 2
        hp.resolved("sml", hp.for_method("sml", {"sml": nest(step)}), 8, 0)
    # from the defaults ({}), a step sets only the one or two parameters it drew
    assert all(1 <= len(neighbour(space, {}, rng)) <= 2 for _ in range(20))


def test_the_second_half_of_the_trials_searches_around_the_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trials 1..n/2 are global draws; the rest are steps from the best trial so far."""
    space = {"fit.lr": LogUniform(1e-3, 1e-2), "fit.l2": LogUniform(1e-4, 1e-2),
             "fit.epochs": Choice((1, 2, 3))}
    monkeypatch.setitem(tune.SPACES, "fine_tune", space)
    monkeypatch.setattr(tune, "pretrain", lambda *a, **k: None)
    tried: list[dict[str, Any]] = []

    class Run:
        selection: ClassVar[dict[str, Any]] = {}  # no rate chosen: a baseline

        def __init__(self, score: float) -> None:
            self.score = score

        def summary(self, periods: Any) -> dict[str, float]:
            return {"recall@20": self.score, "ndcg@20": 0.0}

    def walk(name: str, data: Any, base: Any, *, hyper: hp.Hyper, **_: Any) -> Run:
        tried.append(hyper["fit"])
        return Run(hyper["fit"]["lr"] if len(tried) == 2 else 0.0)  # trial 2 is the best

    monkeypatch.setattr(tune, "run_method", walk)
    data = type("Data", (), {"roles": options.roles_for(12_000)})()
    trials = tune.tune_method("fine_tune", data, {}, trials=9, dim=8, seed=0,  # type: ignore[arg-type]
                              rng=np.random.default_rng(3))
    assert len(trials) == 9 and trials[0].hyper["fit"] == tried[1]
    best = tried[1]
    for local in tried[5:]:  # 1 defaults + 4 global, then 4 local steps from trial 2
        assert 1 <= sum(local[k] != best[k] for k in ("lr", "l2", "epochs")) <= 2


def test_sml_variants_take_smls_settings_unless_named() -> None:
    """SML-0 and the ablations must differ from a tuned SML only in what makes them
    variants, so a hyper file that tunes SML alone applies to them too."""
    assert hp.DEFAULTS["sml"]["step_one"] == "own"
    tuned = {"sml": {"fit": {"epochs": 10}, "step_one": "transfer"},
             "sml_cnn": {"fit": {"epochs": 3}}}
    for name in ("sml_frozen", "sml_s", "sml_n", "sml_fc"):
        hyper = hp.for_method(name, tuned)
        assert hyper["fit"]["epochs"] == 10 and hyper["step_one"] == "transfer"
    cnn = hp.for_method("sml_cnn", tuned)  # named: its own settings, defaults for the rest
    assert cnn["fit"]["epochs"] == 3 and cnn["step_one"] == "own"
    assert hp.for_method("fine_tune", tuned) == hp.for_method("fine_tune")


def test_sml_starts_from_fine_tunes_choice() -> None:
    chosen = {"fine_tune": {"fit": {"epochs": 10, "lr": 0.02, "l2": 1e-3, "n_negatives": 2,
                                    "batch_size": 1024}}}
    [start] = tune._starts("sml", chosen)
    assert start == {"fit.epochs": 10, "fit.lr": 0.02, "fit.l2": 1e-3, "fit.n_negatives": 2,
                     "step_one": "own"}
    hp.resolved("sml", hp.for_method("sml", {"sml": nest(start)}), 8, 0)  # a valid config
    assert tune._starts("sml", {}) == [] and tune._starts("spmf", chosen) == []


@pytest.mark.usefixtures("quick_methods")
def test_tune_then_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stops: list[tuple[str, int | None]] = []
    walk = tune.run_method

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        stops.append((name, kwargs.get("last_period")))
        return walk(name, *args, **kwargs)

    monkeypatch.setattr(tune, "run_method", spy)
    out = tmp_path / "hyper.json"
    assert tune.main([*TINY, "--methods", "sml,fine_tune", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    # every trial stopped at the last validation period: no test period trained or scored
    validation_end = options.roles_for(12_000).validation[-1]
    assert stops == [("fine_tune", validation_end)] * 2 + [("sml", validation_end)] * 2
    assert set(written["methods"]) == {"fine_tune", "sml"}
    trials = written["tuning"]["trials"]["fine_tune"]
    assert len(trials) == 2 and len(written["tuning"]["pretrain_trials"]) == 2
    best = max(trials, key=lambda t: (t["validation_recall@20"], t["validation_ndcg@20"]))
    assert written["methods"]["fine_tune"] == best["hyper"]
    # the defaults are always among the trials, so tuning never ends below them
    assert hp.for_method("fine_tune") in [t["hyper"] for t in trials]
    assert written["pretrain"] in [t["hyper"] for t in written["tuning"]["pretrain_trials"]]

    # the replay reads it: the chosen base and each method's chosen settings are used
    run = tmp_path / "run"
    argv = ["--dataset", "synthetic", "--dim", "8", "--methods", "fine_tune,sml",
            "--hyper", str(out), "--out", str(run)]
    assert replay.main(argv) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["protocol"]["pretrain_hyperparameters"] == written["pretrain"]
    fit = results["methods"]["fine_tune"]["hyperparameters"]["fit"]
    assert fit == {**fit, **written["methods"]["fine_tune"]["fit"]}

    # tuning one more method into the same file keeps those already there
    assert tune.main([*TINY, "--methods", "popularity", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert set(again["methods"]) == {"fine_tune", "sml", "popularity"}
    assert again["methods"]["sml"] == written["methods"]["sml"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--trials", "0"], "--trials"),
        (["--methods", "sml,nope"], "unknown methods nope"),
        (["--dataset", "/no/such/file.csv"], "/no/such/file.csv"),
        (["--roles", "1,1,1"], "--roles"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    flags: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TINY, "--out", str(tmp_path / "h.json"), *flags]
    try:
        code = tune.main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


def test_a_trial_records_the_step_two_rate_it_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults' trial chooses its rate among meta_lrs on the validation periods and
    is recorded with that rate alone; a trial that drew a rate is run and recorded with it.
    Step 1's window, which neither trial drew, each chose and records alone."""
    monkeypatch.setitem(
        hp.DEFAULTS,
        "sml",
        {"fit": {"epochs": 1}, "transfer": {"hidden": 16}, "offline_passes": 1,
         "meta_lrs": [0.0, 1e-2], "step_one_windows": [1, 2]},
    )
    monkeypatch.setitem(tune.SPACES, "sml", {"meta.lr": LogUniform(1e-4, 1e-3)})
    log = synthetic_drift(SyntheticConfig(n_periods=6, interactions_per_period=300,
                                          n_users_initial=30, n_items_initial=120, seed=3))
    data = ReplayData.prepare(log, options.Roles.from_counts(2, 2, 1, 1), n_negatives=20)
    trials = tune.tune_method("sml", data, hp.PRETRAIN, trials=2, dim=8, seed=0,
                              rng=np.random.default_rng(0))
    # the drawn rate lies in [1e-4, 1e-3], so a rate from meta_lrs marks the defaults' trial
    by_origin = {t.hyper["meta"]["lr"] in (0.0, 1e-2): t.hyper for t in trials}
    defaults, drawn = by_origin[True], by_origin[False]
    assert defaults["meta_lrs"] == [defaults["meta"]["lr"]]
    assert 1e-4 <= drawn["meta"]["lr"] <= 1e-3 and drawn["meta_lrs"] == [drawn["meta"]["lr"]]
    for t in trials:  # what the file records builds, and is run as recorded (no new choice)
        assert hp.theta_lrs("sml", t.hyper) == [t.hyper["meta"]["lr"]]
        assert hp.step_one_windows("sml", t.hyper) == [t.hyper["step_one_window"]]
        assert len(hp.candidates("sml", t.hyper)) == 1
