"""/dashboard in a real headless browser (Debian's chromium, driven over the
DevTools protocol) against a running service with three scored versions and a
challenger: the operator types the token into the form, and the page draws every
scored version in the chart, the strategies side by side, the versions and the
periods, without a request to any other host. The screenshot is written where
``SMLREC_DASHBOARD_SCREENSHOT`` says (docs/dashboard.png is made that way), else
into the test's folder. Skipped where no chromium is installed."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from service_testkit import ModelWriter, make_settings, wait_for
from websockets.sync.client import ClientConnection, connect

from smlrec.app import create_app
from store import NewInteraction, Store

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TOKEN = "t"  # make_settings' admin token


class Browser:
    """One headless page, commanded over the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == ident:
                assert "error" not in message, message
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium installed (apt-get install chromium): the page is not driven")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = _chromium()
    process = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-port=0",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1400", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        endpoint = None
        for line in process.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/..."
            found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                endpoint = found.group(1)
                break
        assert endpoint is not None, "chromium did not open its DevTools port"
        targets = httpx.get(f"http://127.0.0.1:{endpoint}/json/list", timeout=30).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=2**26) as socket:
            yield Browser(socket)
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture
def service(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A running service (no worker) with three sml versions scored on the period
    after their own, a fine_tune challenger's versions, and both strategies' scores."""
    settings = make_settings(tmp_path, sqlite_url, challengers="fine_tune")
    store = Store.from_url(settings.database_url)
    store.ingest([NewInteraction(f"u{n % 3}", f"i{n}", float(n)) for n in range(9)])
    models = ModelWriter(store, settings.model_dir)
    served = []
    for period in range(3):
        challenger = models.write(seed=10 + period, period_id=period, activate=False,
                                  strategy="fine_tune")
        served.append(models.write(seed=period, period_id=period))
        if period == 0:
            continue
        for version, name, recall in ((served[-2], "sml", 0.5 + period / 10),
                                      (challenger - 2, "fine_tune", 0.55)):
            metrics = {"evaluated_on_period": period, "recall@20": recall, "ndcg@20": 0.25,
                       "n_interactions": 9}
            store.set_metrics(version, metrics)
            store.record_score(period_id=period, strategy=name, version=version,
                               metrics=metrics, train_seconds=1.0)
    store.close()
    port = _free_port()
    app = create_app(settings, run_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=600)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", {"served": served}
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _drawn(browser: Browser) -> Any:
    return browser.evaluate("""(() => {
      const text = (id) => document.getElementById(id).textContent;
      const rows = (id) => [...document.getElementById(id).tBodies[0].rows]
        .map((r) => [...r.cells].map((c) => c.textContent));
      return {
        hidden: document.getElementById("content").hidden,
        status: text("status"),
        active: text("active"),
        points: [...document.querySelectorAll("#chart circle.recall")]
          .map((c) => c.dataset.version),
        strategies: text("strategies"),
        columns: [...document.getElementById("strategy-scores").tHead.rows[0].cells]
          .map((c) => c.textContent),
        scores: rows("strategy-scores"),
        best: [...document.querySelectorAll("#strategy-scores td.best")]
          .map((c) => c.textContent),
        versions: rows("versions").map((r) => r[0]),
        periods: rows("periods").map((r) => r[0]),
        stored: sessionStorage.getItem("smlrec-admin-token"),
        local: localStorage.length,
        cookies: document.cookie,
      };
    })()""")


def test_the_dashboard_draws_a_running_service_in_a_browser(
    browser: Browser, service: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    base, made = service
    browser.call("Network.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{base}/dashboard")
    wait_for(lambda: browser.evaluate("document.readyState") == "complete", timeout=120)
    assert browser.evaluate("document.getElementById('content').hidden") is True  # no token yet
    browser.evaluate(f"""(() => {{
      document.getElementById("token").value = {json.dumps(TOKEN)};
      document.getElementById("login").requestSubmit();
    }})()""")

    def ready() -> bool:
        drawn = _drawn(browser)
        return not drawn["hidden"] and bool(drawn["scores"])

    assert wait_for(ready, timeout=120)
    drawn = _drawn(browser)
    served = made["served"]
    assert drawn["active"].startswith(f"version {served[-1]} (sml")
    # every scored version is a point: sml's 2 and 4, fine_tune's 1 and 3
    assert sorted(drawn["points"]) == [str(v) for v in sorted([*served[:2], *(v - 1 for v in
                                                                           served[:2])])]
    assert "serving sml" in drawn["strategies"] and "fine_tune" in drawn["strategies"]
    assert drawn["columns"][0] == "period"
    assert drawn["columns"][1].startswith("sml (serving): 2 won")
    assert drawn["columns"][2].startswith("fine_tune: 0 won")
    assert [row[0] for row in drawn["scores"]] == ["2", "1"]
    assert drawn["scores"][0][1:] == ["0.7000 / 0.2500", "0.5500 / 0.2500"]
    assert drawn["best"] == ["0.7000 / 0.2500", "0.6000 / 0.2500"]
    assert len(drawn["versions"]) == 6 and drawn["periods"] == ["0"]
    assert drawn["stored"] == TOKEN and drawn["local"] == 0 and drawn["cookies"] == ""

    requested = [e["params"]["request"]["url"] for e in browser.events
                 if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith(base + "/") for url in requested), requested

    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    target = Path(os.environ.get("SMLREC_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    target.write_bytes(base64.b64decode(shot["data"]))
    assert target.stat().st_size > 10_000
