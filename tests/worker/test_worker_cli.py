"""The ``smlrec`` command line: the demo load client against a live embedded
server, argument parsing, and the worker's signal handling."""

from __future__ import annotations

import functools
import importlib.metadata
import io
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from worker_testkit import free_port, make_settings, wait_for

from smlrec.app import create_app
from smlrec.cli import _StopOnSignal, build_parser
from smlrec.client import Client
from smlrec.load import DemoLoad, LoadConfig, LoadError, run_load
from store import Store


def _settled(server: uvicorn.Server, thread: threading.Thread) -> bool:
    return bool(server.started) or not thread.is_alive()


@pytest.fixture
def live_server(sqlite_url: str, tmp_path: Path) -> Iterator[str]:
    """``smlrec serve`` (embedded: worker process on) on a free port, in this process."""
    settings = make_settings(sqlite_url, tmp_path / "models", period="manual")
    for _ in range(3):  # a free port can be taken by someone else before we bind it
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, run_worker=True), host="127.0.0.1", port=port, log_config=None
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(functools.partial(_settled, server, thread), timeout=600)
        if server.started:
            break
    else:
        pytest.fail("the server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_load_replays_periods_and_reports_online_metrics(live_server: str, sqlite_url: str) -> None:
    out = io.StringIO()
    rows = run_load(
        LoadConfig(
            dataset="synthetic",
            url=live_server,
            period_size=2000,
            admin_token="admin-secret",
            limit_periods=3,
            poll_s=0.05,
        ),
        out,
    )
    assert [(r.version, r.trained_on, r.evaluated_on) for r in rows] == [
        (1, 0, 1),
        (2, 1, 2),
        (3, 2, None),
    ]
    for r in rows[:2]:
        assert r.n_interactions == 2000
        assert r.recall is not None and 0.0 < r.recall <= 1.0
    report = out.getvalue()
    assert "Recall@20" in report and "NDCG@20" in report
    assert f"{rows[0].recall:.4f}" in report and "mean over 2 evaluated periods" in report

    store = Store.from_url(sqlite_url)
    try:
        assert [p.n_interactions for p in store.list_periods()] == [2000, 2000, 2000, 0]
    finally:
        store.close()
    # Running it again posts the same event ids: nothing new, nothing to retrain.
    again = run_load(
        LoadConfig(
            dataset="synthetic",
            url=live_server,
            period_size=2000,
            admin_token="admin-secret",
            limit_periods=1,
        ),
        io.StringIO(),
    )
    assert len(again) == 3


def test_load_stops_with_the_services_refusal(live_server: str) -> None:
    config = LoadConfig(dataset="synthetic", url=live_server, period_size=10,
                        admin_token="wrong", limit_periods=1)
    with pytest.raises(LoadError, match="403"):
        run_load(config, io.StringIO())


def test_an_unanswered_retrain_request_is_followed_not_sent_blind() -> None:
    """A retrain POST whose answer is lost may have closed the period: the loader
    waits until no period waits for its retrain, then asks again (here: nothing is
    left to retrain)."""
    sent: list[tuple[str, str]] = []
    answers = iter([
        httpx.ConnectError("connection reset"),
        httpx.Response(200, json={"periods": [
            {"period_id": 0, "status": "trained", "n_interactions": 5, "start": 1.0,
             "end": 2.0},
            {"period_id": 1, "status": "open", "n_interactions": 0, "start": None,
             "end": None}]}),
        httpx.Response(409, json={"detail": "the open period is empty"}),
    ])

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.path))
        reply = next(answers)
        if isinstance(reply, Exception):
            raise reply
        return reply

    config = LoadConfig(dataset="synthetic", url="http://service", poll_s=0.01)
    with Client(config.url, transport=httpx.MockTransport(answer)) as client:
        assert DemoLoad(config, client)._retrain() is None
    assert sent == [("POST", "/v1/admin/retrain"), ("GET", "/v1/admin/periods"),
                    ("POST", "/v1/admin/retrain")]


def test_command_line_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "load",
            "--dataset",
            "synthetic",
            "--url",
            "http://x:1",
            "--period-size",
            "100",
            "--limit-periods",
            "2",
            "--admin-token",
            "t",
            "--api-key",
            "k",
        ]
    )
    assert (args.dataset, args.url, args.period_size, args.limit_periods) == (
        "synthetic",
        "http://x:1",
        100,
        2,
    )
    assert (args.admin_token, args.api_key) == ("t", "k")
    serve = parser.parse_args(["serve", "--no-worker", "--host", "0.0.0.0", "--port", "9000"])
    assert (serve.no_worker, serve.host, serve.port) == (True, "0.0.0.0", 9000)
    assert parser.parse_args(["serve"]).no_worker is False
    for command in ("worker", "migrate", "bootstrap"):
        assert parser.parse_args([command]).command == command


def test_first_signal_stops_warm_second_exits() -> None:
    stop = threading.Event()
    handler = _StopOnSignal(stop)
    handler(signal.SIGTERM, None)
    assert stop.is_set()
    with pytest.raises(SystemExit) as exit_info:  # at once: raised by the handler itself
        handler(signal.SIGINT, None)
    assert exit_info.value.code == 128 + signal.SIGINT


def test_version_and_every_commands_help_say_what_they_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--version`` prints the installed version; ``serve``, ``worker``, ``migrate``
    and ``bootstrap --help`` describe the command and where its settings come from,
    not only ``-h``."""
    parser = build_parser()
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"smlrec {importlib.metadata.version('smlrec')}"
    said = {"serve": "--no-worker", "worker": "SMLREC_REDIS_URL",
            "migrate": "SMLREC_DATABASE_URL", "bootstrap": "checkpoint"}
    for command, detail in said.items():
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command, "--help"])
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert detail in text and "SMLREC_* environment variables" in text, command
