"""GET /dashboard: a page that loads only the service's own files, and the script's
drawing code run (under Node) on what a running service with three scored versions
answers. No headless browser runs here (this machine has none): the DOM part of the
script, which only writes what these functions return into the page, is not driven."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from service_testkit import ADMIN, ModelWriter, TestClient, app_of, interactions, wait_for

from service.dashboard import FILES
from store import Store

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
SCRIPT = FILES / "dashboard.js"


def test_the_page_and_its_files_name_no_other_host(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = URL.findall(page.text)
    assert sorted(urls) == ["/dashboard/assets/dashboard.css", "/dashboard/assets/dashboard.js"]
    for text in [page.text] + [client.get(url).text for url in urls]:
        assert "://" not in text and not re.search(r"""["'(]//""", text)
    for url in urls:
        assert client.get(url).status_code == 200
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]


def _node(expression: str, **inputs: Any) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the dashboard script's functions are not run")
    program = (f"const d = require({json.dumps(str(SCRIPT))});\n"
               f"const input = {json.dumps(inputs)};\n"
               f"process.stdout.write(JSON.stringify({expression}));")
    done = subprocess.run([node, "-e", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_chart_draws_every_scored_version_of_a_running_service(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    client.post("/v1/interactions", json=interactions(*[(f"u{n % 3}", f"i{n}")
                                                         for n in range(9)]))
    versions = [models.write(seed=n, period_id=n) for n in range(4)]
    for n, version in enumerate(versions[:3]):  # the newest is not scored yet
        store.set_metrics(version, {"evaluated_on_period": n + 1, "recall@20": 0.5 + n / 10,
                                    "ndcg@20": 0.2 + n / 20, "n_interactions": 9})
    assert wait_for(lambda: app_of(client).state.runtime.holder.version == versions[-1])
    answer = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
    svg = _node("d.chartSvg(d.evaluatedPoints(input.models))", models=answer)
    drawn = re.findall(r'<circle class="recall" cx="([\d.]+)" cy="([\d.]+)" r="3" '
                       r'stroke="#[0-9a-f]+" data-version="(\d+)" data-strategy="sml"', svg)
    assert [int(v) for _, _, v in drawn] == versions[:3]  # in the order they were scored
    xs, ys = [float(x) for x, _, _ in drawn], [float(y) for _, y, _ in drawn]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # recall rises: y falls
    assert svg.count("<polyline") == 2 and "version 3 (sml) on period 3: recall@20 0.7000" in svg
    summary = _node("d.strategySummary(input.models)", models=answer)
    assert summary == [{"name": "sml", "versions": 4, "scored": 3, "meanRecall": 0.6}]

    metrics = _node("d.parseMetrics(input.text)", text=client.get("/metrics").text)
    assert metrics["smlrec_active_model_version"] == versions[-1]
    assert _node("d.sumOf(d.parseMetrics(input.text), 'smlrec_http_requests_total')",
                 text=client.get("/metrics").text) >= 3
    assert _node("[d.formatAge(30), d.formatAge(600), d.formatAge(0)]") == ["30 s", "10 min",
                                                                             "-"]
    empty = _node("d.chartSvg([])")
    assert "<svg" not in empty and "No version has been scored yet" in empty
    assert _node("d.escapeXml('<b>&')") == "&#60;b&#62;&#38;"


def test_the_page_keeps_the_token_in_the_tabs_session_storage_only() -> None:
    script = Path(SCRIPT).read_text()
    assert "sessionStorage" in script and "localStorage" not in script
    assert "document.cookie" not in script


def test_strategies_are_drawn_side_by_side(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    """Each strategy gets its own lines in the chart, and the strategies table puts
    their scores on each period side by side, the period's best marked."""
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2")))
    scored = {"sml": [0.5, 0.6], "spmf": [0.55, 0.58]}
    for name, recalls in scored.items():
        for period, recall in enumerate(recalls):
            version = models.write(seed=period, period_id=period, strategy=name,
                                   activate=name == "sml")
            metrics = {"evaluated_on_period": period + 1, "recall@20": recall,
                       "ndcg@20": recall / 2, "n_interactions": 2}
            store.set_metrics(version, metrics)
            store.record_score(period_id=period + 1, strategy=name, version=version,
                               metrics=metrics, train_seconds=1.0)
    answer = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
    svg = _node("d.chartSvg(d.evaluatedPoints(input.models))", models=answer)
    assert svg.count("<polyline") == 4
    for name in scored:
        assert len(re.findall(rf'<circle [^>]*data-strategy="{name}"', svg)) == 2
    assert svg.count(">p1<") == 1 and svg.count(">p2<") == 1  # one x position per period

    overview = client.get("/v1/admin/strategies", headers=ADMIN).json()
    table = _node("d.strategyTable(input.overview)", overview=overview)
    assert table["names"] == ["sml", "spmf"]  # the serving one first, then any scored
    assert [row["period"] for row in table["rows"]] == [2, 1]
    assert [[c["best"] for c in row["cells"]] for row in table["rows"]] == [[True, False],
                                                                          [False, True]]
    assert table["summary"][0] == {"name": "sml", "serving": True, "wins": 1,
                                   "meanRecall": 0.55}
    assert table["summary"][1]["wins"] == 1
