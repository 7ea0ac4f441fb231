"""Settings: defaults, environment, URL normalisation and the period rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from smlrec.settings import (
    PeriodRule,
    Settings,
    get_settings,
    parse_period,
    parse_type_weights,
)


def test_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.sqlalchemy_url == "sqlite:///./smlrec-data/smlrec.db"
    assert settings.redis_url is None
    assert settings.redis_prefix == "smlrec"
    assert settings.period_rule == PeriodRule(kind="count", count=5000)
    assert settings.strategy == "sml"
    assert settings.embed_dim == 64


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_gets_the_psycopg_driver(url: str, expected: str) -> None:
    assert Settings(database_url=url).sqlalchemy_url == expected


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("count:1", PeriodRule(kind="count", count=1)),
        ("count:5000", PeriodRule(kind="count", count=5000)),
        ("time:8h", PeriodRule(kind="time", seconds=8 * 3600.0)),
        ("time:90s", PeriodRule(kind="time", seconds=90.0)),
        ("time:15m", PeriodRule(kind="time", seconds=900.0)),
        ("time:2d", PeriodRule(kind="time", seconds=172800.0)),
        ("manual", PeriodRule(kind="manual")),
    ],
)
def test_period_rules(spec: str, rule: PeriodRule) -> None:
    assert parse_period(spec) == rule
    assert Settings(period=spec).period_rule == rule


@pytest.mark.parametrize(
    "spec", ["count:0", "count:-3", "count:x", "time:8", "time:0h", "time:-1h", "weekly", ""]
)
def test_invalid_period_is_rejected_clearly(spec: str) -> None:
    with pytest.raises(ValidationError, match="count:N"):
        Settings(period=spec)


@pytest.mark.parametrize(
    "overrides",
    [{"embed_dim": 0}, {"embed_dim": 1025}, {"strategy": "magic"}, {"log_level": "LOUD"},
     {"redis_prefix": ""}, {"redis_prefix": "a b"}, {"redis_prefix": "x*y"},
     {"redis_prefix": "p" * 65}],
)
def test_invalid_values_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMLREC_DATABASE_URL", "postgres://app@db:5432/smlrec")
    monkeypatch.setenv("SMLREC_PERIOD", "time:8h")
    monkeypatch.setenv("SMLREC_STRATEGY", "fine_tune")
    monkeypatch.setenv("SMLREC_REDIS_URL", "")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings is get_settings()
        assert settings.sqlalchemy_url == "postgresql+psycopg://app@db:5432/smlrec"
        assert settings.period_rule.seconds == 8 * 3600
        assert settings.strategy == "fine_tune"
        assert settings.redis_url is None
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(("value", "parsed"), [
    ("auto", "auto"), ("true", True), ("false", False), ("1", True), ("0", False)])
def test_int8_scoring_is_auto_or_a_switch(
    monkeypatch: pytest.MonkeyPatch, value: str, parsed: object
) -> None:
    assert Settings().int8_scoring == "auto"
    monkeypatch.setenv("SMLREC_INT8_SCORING", value)
    assert Settings().int8_scoring == parsed


def test_int8_scoring_rejects_other_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMLREC_INT8_SCORING", "fast")
    with pytest.raises(ValidationError):
        Settings()


def test_every_setting_is_in_the_readme_table_and_nothing_else() -> None:
    """README's configuration table names each Settings field once (as its variable
    without the prefix), with the field's default, and names no other variable."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", section, re.M)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(field.upper() for field in Settings.model_fields)
    shown = {name: cell.replace(",", "") for name, cell in rows}  # 100,000 -> 100000
    checked = 0
    for field, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, bool):
            forms = [str(default).lower()]
        elif isinstance(default, float):
            forms = [str(default), f"{default:g}"]
        elif isinstance(default, str) and not default:
            assert shown[field.upper()].strip() == "empty", field
            checked += 1
            continue
        elif isinstance(default, (int, str)):
            forms = [str(default)]
        else:  # unset (None) or a path: described in words
            continue
        assert any(f"`{form}`" in shown[field.upper()] for form in forms), (field, default)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(("spec", "parsed"), [
    ("", {}),
    ("  ", {}),
    ("view:1,like:3,purchase:10", {"view": 1.0, "like": 3.0, "purchase": 10.0}),
    (" like : 2.5 , skip:0.1,", {"like": 2.5, "skip": 0.1}),
    ("add:to:cart:4", {"add:to:cart": 4.0}),  # the weight follows the last colon
])
def test_type_weights_parse(spec: str, parsed: dict[str, float]) -> None:
    assert parse_type_weights(spec) == parsed


@pytest.mark.parametrize("spec", [
    "like", "like:", ":3", "like:0", "like:-1", "like:nan", "like:inf", "like:x",
    "like:1,like:2", "t" * 33 + ":1",
])
def test_bad_type_weights_are_refused_naming_the_variable(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError):
        parse_type_weights(spec)
    monkeypatch.setenv("SMLREC_TYPE_WEIGHTS", spec)
    with pytest.raises(ValidationError, match="type_weights"):
        Settings()


def test_type_weights_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().type_weight_map == {}
    monkeypatch.setenv("SMLREC_TYPE_WEIGHTS", "view:1,like:3")
    assert Settings().type_weight_map == {"view": 1.0, "like": 3.0}
    monkeypatch.setenv("SMLREC_TYPE_WEIGHTS", "")
    assert Settings().type_weights is None and Settings().type_weight_map == {}
