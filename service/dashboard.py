"""``GET /dashboard``: the operator's page (versions and their quality per evaluated
period as a chart, strategies, periods, failures, the served version, model age,
traffic). It is static: its script reads the admin API with the token the operator
types (kept in the tab's session storage only) and ``/metrics``. Every file it loads
is served from ``service/static/dashboard``; no URL in it names another host."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

FILES = Path(__file__).parent / "static" / "dashboard"


def install_dashboard(app: FastAPI) -> None:
    app.mount("/dashboard/assets", StaticFiles(directory=FILES), name="dashboard-assets")
    page = (FILES / "index.html").read_text()

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})
