"""The API's pages, ``/docs`` (Swagger UI) and ``/redoc``, from assets shipped with the
service: no URL in them names another host, so they work where there is no internet."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon
ASSET_DIR = files("fastapi_offline") / "static"  # the packaged copies of those files


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` (the app is built with ``docs_url=None`` and
    ``redoc_url=None``, so FastAPI's own pages, which load from a CDN, are off)."""
    app.mount(ASSETS, StaticFiles(directory=str(ASSET_DIR)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # no spec validation against swagger.io's online validator (its badge)
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
