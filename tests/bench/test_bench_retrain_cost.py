"""The retrain-cost benchmark at a tiny size: one boundary of each strategy after a
history, timed, on a grown synthetic history and on a named log's own periods."""

from __future__ import annotations

import pytest

from bench import retrain_cost
from sml import hyperparameters as hp

QUICK = {"fit": {"epochs": 1}, "meta": {"epochs": 1, "rounds": 1}, "transfer": {"hidden": 8}}


def _methods(names: tuple[str, ...]) -> dict[str, hp.Hyper]:
    overrides = {"sml": QUICK, "fine_tune": {"fit": {"epochs": 1}}}
    return {name: hp.for_method(name, overrides) for name in names}


def test_a_grown_history_times_every_strategys_boundary() -> None:
    figures = retrain_cost.measure(10_000, _methods(retrain_cost.STRATEGIES), dim=8)
    assert set(figures) == {"_shape", *retrain_cost.STRATEGIES}
    assert all(figures[n]["cpu_s"] > 0 and figures[n]["wall_s"] > 0
               for n in retrain_cost.STRATEGIES)


def test_a_named_logs_last_boundary_is_timed_after_all_its_periods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--profile``: the log's own periods, every one but the last as the history; the
    shape reported is the last period's (every user and item known by then)."""
    calls: list[int] = []
    last = retrain_cost._last_boundary

    def spy(periods: list, methods: dict, **kwargs: object) -> dict:
        calls.append(len(periods))
        return last(periods, methods, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retrain_cost, "_last_boundary", spy)
    names = retrain_cost.PROFILE_STRATEGIES
    figures = retrain_cost.measure_profile("synthetic", _methods(names), dim=8)
    profile = retrain_cost.SYNTHETIC_PROFILES["synthetic"]
    assert calls == [profile.n_periods]
    assert set(figures) == {"_shape", *names}
    assert figures["_shape"]["users"] > profile.n_users_initial
    assert all(figures[n]["cpu_s"] > 0 for n in names)
