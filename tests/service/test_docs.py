"""``/docs`` and ``/redoc`` load nothing from another host (shared contract: they
must work without internet): every URL the pages name is the service's own, and
each one answers with the asset it names. Also with a client key set, the pages
need none (like /healthz), and they stay out of the OpenAPI document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from service_testkit import ClientFactory, TestClient, make_settings

from smlrec.settings import Settings

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")
SPEC = re.compile(r"""(?:spec-url|url)\s*[=:]\s*["']([^"']+)["']""")


def _urls(page: str) -> set[str]:
    return {a or b for a, b in URL.findall(page)} | set(SPEC.findall(page))


@pytest.mark.parametrize(("path", "script"), [("/docs", "swagger-ui-bundle.js"),
                                              ("/redoc", "redoc.standalone.js")])
def test_the_api_pages_load_only_the_services_own_assets(
    client: TestClient, path: str, script: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/html")
    page = response.text
    assert "://" not in page  # no absolute URL anywhere in the page
    assert not re.search(r"""["'(]//""", page)  # nor a protocol-relative one
    if path == "/docs":  # no online spec validator (Swagger UI's default)
        assert '"validatorUrl": null' in page
    urls = _urls(page)
    assert "/openapi.json" in urls and any(u.endswith(script) for u in urls)
    for url in urls:
        assert url.startswith("/"), url
        fetched = client.get(url)
        assert fetched.status_code == 200 and len(fetched.content) > 0, url
    assert client.get("/openapi.json").json()["paths"].keys().isdisjoint({"/docs", "/redoc"})


def test_the_api_pages_need_no_client_key(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    settings: Settings = make_settings(tmp_path, sqlite_url, api_key="client-key")
    with make_client(settings) as client:
        assert client.get("/v1/users/u1/recommendations").status_code == 401
        for path in ("/docs", "/redoc", "/docs/assets/swagger-ui.css", "/openapi.json"):
            assert client.get(path).status_code == 200, path
