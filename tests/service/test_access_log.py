"""The access log: one JSON line per request, at INFO for what ``SMLREC_ACCESS_LOG``
selects (by default writes and errors; successful reads, the bulk of the traffic,
at DEBUG), and no Alembic preamble at start."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from service_testkit import ClientFactory, interactions, make_settings

from service.middleware import access_level
from smlrec.logs import JsonFormatter, configure_logging


@pytest.mark.parametrize(("mode", "method", "status", "level"), [
    ("writes_and_errors", "GET", 200, logging.DEBUG),
    ("writes_and_errors", "HEAD", 304, logging.DEBUG),
    ("writes_and_errors", "POST", 202, logging.INFO),
    ("writes_and_errors", "GET", 404, logging.INFO),
    ("errors", "POST", 202, logging.DEBUG),
    ("errors", "GET", 500, logging.INFO),
    ("errors", "GET", 399, logging.DEBUG),
    ("errors", "GET", 400, logging.INFO),
    ("all", "GET", 200, logging.INFO),
    ("off", "POST", 500, None),
])
def test_the_level_of_each_requests_line(mode: str, method: str, status: int,
                                          level: int | None) -> None:
    assert access_level(mode, method, status) == level


def _access_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "service.access" and r.levelno == level]


@pytest.mark.parametrize("mode", ["writes_and_errors", "all", "off"])
def test_the_app_logs_what_the_setting_selects(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture, mode: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="service.access")
    settings = make_settings(tmp_path, sqlite_url, access_log=mode)
    with make_client(settings) as client:
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/interactions", json=interactions(("u1", "i1"))).status_code == 202
        assert client.get("/v1/users/u1/recommendations?k=0").status_code == 422
    info = [(line["method"], line["status"]) for line in _access_lines(caplog, logging.INFO)]
    debug = [(line["method"], line["status"]) for line in _access_lines(caplog, logging.DEBUG)]
    expected = {
        "writes_and_errors": ([("POST", 202), ("GET", 422)], [("GET", 200)]),
        "all": ([("GET", 200), ("POST", 202), ("GET", 422)], []),
        "off": ([], []),
    }[mode]
    assert (info, debug) == expected
    lines = _access_lines(caplog, logging.INFO)
    assert all({"path", "route", "duration_ms", "client"} <= line.keys() for line in lines)


def test_alembic_says_only_what_it_migrates() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    migration = logging.getLogger("alembic.runtime.migration")
    seen: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    try:
        configure_logging("INFO")
        migration.addHandler(collect)
        migration.info("Context impl SQLiteImpl.")
        migration.info("Will assume transactional DDL.")
        migration.info("Running upgrade 0002 -> 0003, retries")
    finally:
        migration.removeHandler(collect)
        root.handlers[:] = handlers
        root.setLevel(level)
    assert seen == ["Running upgrade 0002 -> 0003, retries"]


def test_json_log_lines_are_objects_and_access_fields_are_their_own() -> None:
    formatter = JsonFormatter()
    plain = logging.LogRecord("smlrec", logging.WARNING, __file__, 1, "token in %s", ("a/b",),
                              None)
    line = json.loads(formatter.format(plain))
    assert line["level"] == "WARNING" and line["logger"] == "smlrec"
    assert line["message"] == "token in a/b" and line["time"].endswith("+00:00")
    access = logging.LogRecord("service.access", logging.INFO, __file__, 1, "{}", None, None)
    access.fields = {"method": "POST", "status": 202}
    line = json.loads(formatter.format(access))
    assert (line["method"], line["status"]) == ("POST", 202) and "message" not in line
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None,
                                   sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(failed))["exception"]
    with pytest.raises(ValueError, match="plain, json"):
        configure_logging("INFO", "xml")
