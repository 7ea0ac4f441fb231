"""Hostile input: every malformed or malicious request gets a 4xx, nothing of it
is stored, and the process keeps answering as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from service_testkit import (
    ADMIN,
    ClientFactory,
    TestClient,
    interactions,
    make_settings,
    row_counts,
)

from service.deps import same_secret
from smlrec.settings import Settings
from store import Store

JSON = {"Content-Type": "application/json"}


def _unharmed(client: TestClient, store: Store, before: tuple[int, int, int]) -> None:
    """Nothing stored, and the service still answers and stores a good request."""
    assert row_counts(store) == before
    assert client.get("/healthz").status_code == 200
    body = client.get("/v1/users/someone/recommendations").json()
    assert [e["item_id"] for e in body["items"]] == ["i0"]  # what the `before` fixture logged
    assert body["fallback"] == "popularity"
    good = client.post("/v1/interactions", json=interactions(("good-user", "good-item")))
    assert good.status_code == 202 and good.json()["accepted"] == 1
    n_rows, n_users, n_items = before
    assert row_counts(store) == (n_rows + 1, n_users + 1, n_items + 1)


def _post_raw(client: TestClient, path: str, body: bytes,
              headers: dict[str, str] | None = None) -> int:
    status: int = client.post(path, content=body, headers={**JSON, **(headers or {})}).status_code
    return status


def _deep(depth: int) -> bytes:
    return b'{"interactions": ' + b"[" * depth + b"]" * depth + b"}"


def _one(**fields: Any) -> bytes:
    return json.dumps({"interactions": [{"user_id": "u1", "item_id": "i1", **fields}]}).encode()


HOSTILE_INTERACTIONS: dict[str, bytes] = {
    "deep json": _deep(100_000),
    "deep objects": b'{"interactions": [' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]}",
    "huge user id": _one(user_id="x" * 1_000_000),
    "huge item id": _one(item_id="é" * 129),
    "huge event id": _one(event_id="e" * 129),
    "not utf-8": b'{"interactions": [{"user_id": "\xff\xfe", "item_id": "i1"}]}',
    "latin-1 body": '{"interactions": [{"user_id": "caf\xe9", "item_id": "i1"}]}'.encode("latin-1"),
    "lone surrogate": b'{"interactions": [{"user_id": "\\ud800", "item_id": "i1"}]}',
    "nul in id": b'{"interactions": [{"user_id": "a\\u0000b", "item_id": "i1"}]}',
    "negative timestamp": _one(timestamp=-1),
    "NaN timestamp": b'{"interactions": [{"user_id": "u1", "item_id": "i1", "timestamp": NaN}]}',
    "infinite timestamp": b'{"interactions": [{"user_id": "u", "item_id": "i", '
                          b'"timestamp": 1e999}]}',
    "-Infinity timestamp": b'{"interactions": [{"user_id": "u", "item_id": "i", '
                           b'"timestamp": -Infinity}]}',
    "huge integer timestamp": _one(timestamp=10**400),
    "timestamp string nan": _one(timestamp="nan"),
    "timestamp before 1970": _one(timestamp="1969-12-31T23:59:59Z"),
    "timestamp without zone": _one(timestamp="2020-01-01T00:00:00"),
    "timestamp boolean": _one(timestamp=True),
    "timestamp object": _one(timestamp={"$gt": 0}),
    "ids not strings": b'{"interactions": [{"user_id": 1, "item_id": ["i"]}]}',
    "empty ids": _one(user_id="", item_id=""),
    "empty batch": b'{"interactions": []}',
    "not a list": b'{"interactions": {"user_id": "u", "item_id": "i"}}',
    "top-level list": b'[{"user_id": "u", "item_id": "i"}]',
    "truncated json": b'{"interactions": [{"user_id": "u1", "item_id": "i1"',
    "empty body": b"",
    "binary garbage": bytes(range(256)) * 4,
    "duplicate keys": b'{"interactions": [{"user_id": "u", "user_id": "", "item_id": "i"}]}',
    "bad item among good": json.dumps({"interactions": [
        {"user_id": "u1", "item_id": "i1"}, {"user_id": "u2", "item_id": "i2", "timestamp": -5}]
    }).encode(),
}


@pytest.fixture
def before(client: TestClient, store: Store) -> tuple[int, int, int]:
    assert client.post("/v1/interactions", json=interactions(("u0", "i0"))).status_code == 202
    return row_counts(store)


@pytest.mark.parametrize("name", list(HOSTILE_INTERACTIONS))
def test_hostile_interaction_bodies_are_4xx_and_store_nothing(
    client: TestClient, store: Store, before: tuple[int, int, int], name: str
) -> None:
    status = _post_raw(client, "/v1/interactions", HOSTILE_INTERACTIONS[name])
    assert 400 <= status < 500, (name, status)
    _unharmed(client, store, before)


def test_oversized_bodies_are_413(
    client: TestClient, store: Store, before: tuple[int, int, int]
) -> None:
    huge = b'{"interactions": [' + b'{"user_id": "u", "item_id": "i"},' * 600_000 + b"]}"
    assert len(huge) > 16 * 1024 * 1024
    assert _post_raw(client, "/v1/interactions", huge) == 413
    too_many = interactions(*[(f"u{n}", "i") for n in range(10_001)])
    assert client.post("/v1/interactions", json=too_many).status_code == 413
    big_batch = b'{"user_ids": ["' + b"u" * (2 * 1024 * 1024) + b'"]}'
    assert _post_raw(client, "/v1/recommendations", big_batch) == 413
    _unharmed(client, store, before)


@pytest.mark.parametrize(
    "body",
    [_deep(100_000).replace(b"interactions", b"user_ids"),
     b'{"user_ids": ["u0"], "k": NaN}', b'{"user_ids": ["u0"], "k": 1e999}',
     b'{"user_ids": ["u0"], "k": 0}', b'{"user_ids": ["u0"], "k": 1001}',
     b'{"user_ids": ["u0"], "k": -1}', b'{"user_ids": ["\xff"]}',
     b'{"user_ids": ["../../etc/passwd' + b"x" * 200 + b'"]}', b"\x00\x01"],
    ids=["deep", "k NaN", "k inf", "k 0", "k 1001", "k -1", "not utf-8", "long traversal",
         "binary"],
)
def test_hostile_batch_requests_are_4xx(
    client: TestClient, store: Store, before: tuple[int, int, int], body: bytes
) -> None:
    status = _post_raw(client, "/v1/recommendations", body)
    assert 400 <= status < 500, status
    _unharmed(client, store, before)


@pytest.mark.parametrize(
    "path",
    ["/v1/users/u0/recommendations?k=0", "/v1/users/u0/recommendations?k=1001",
     "/v1/users/u0/recommendations?k=-5", "/v1/users/u0/recommendations?k=NaN",
     "/v1/users/u0/recommendations?k=1e3", "/v1/users/u0/recommendations?k=99999999999999999999",
     "/v1/users/u0/recommendations?exclude_seen=2",
     "/v1/users/..%2F..%2Fetc%2Fpasswd/recommendations",
     "/v1/users/%2E%2E/%2E%2E/etc/passwd/recommendations",
     "/v1/users/%2F/recommendations",
     "/v1/users//recommendations",
     f"/v1/users/{'x' * 10_000}/recommendations",
     "/v1/admin/jobs/..%2F..%2Fetc%2Fpasswd",
     "/v1/admin/models/..%2F1/activate",
     "/v1/admin/models/1e3/activate",
     "/v1/admin/models/-1/activate",
     "/v1/admin/models/99999999999999999999999/activate",
     "/v1/admin/models/NaN/activate",
     "/v1/users/a%00b/recommendations"],
)
def test_hostile_paths_are_4xx(
    client: TestClient, store: Store, before: tuple[int, int, int], path: str
) -> None:
    method = client.post if path.endswith("/activate") else client.get
    status = method(path, headers=ADMIN).status_code
    assert 400 <= status < 500, (path, status)
    if "/jobs/" in path:
        assert status == 404  # no such job
    _unharmed(client, store, before)


def test_traversal_looking_ids_are_only_data(
    client: TestClient, store: Store, settings: Settings
) -> None:
    """An id is a string in the database, never a file name: storing and asking
    for "../../etc/passwd" touches no file."""
    files_before = sorted(Path(settings.model_dir).rglob("*"))
    evil = "../../../etc/passwd"
    body = interactions((evil, "..\\..\\boot.ini"), ("%2e%2e%2f", "/dev/zero"))
    assert client.post("/v1/interactions", json=body).status_code == 202
    response = client.post("/v1/recommendations", json={"user_ids": [evil]})
    assert response.status_code == 200 and response.json()["results"][0]["user_id"] == evil
    assert sorted(Path(settings.model_dir).rglob("*")) == files_before
    assert evil in store.user_ids()


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401),
     ({"Authorization": "t"}, 401),
     ({"Authorization": "Bearer"}, 401),
     ({"Authorization": "Bearer "}, 401),
     ({"Authorization": "Basic dDp0"}, 401),
     ({"Authorization": "Token t"}, 401),
     ({"Authorization": "Bearer t t"}, 403),
     ({"Authorization": "Bearer T"}, 403),
     ({"Authorization": "Bearer tt"}, 403),
     ({"Authorization": "Bearer " + "t" * 100_00}, 403),
     ({"Authorization": "Bearer \u00e9"}, 403),
     ({"X-API-Key": "Bearer t"}, 401)],
    ids=["none", "no scheme", "scheme only", "empty token", "basic", "other scheme",
         "two tokens", "case", "longer", "huge", "non-ascii", "client key instead"],
)
def test_admin_credentials(
    client: TestClient, headers: dict[str, str], status: int
) -> None:
    for method, path in (("POST", "/v1/admin/retrain"), ("GET", "/v1/admin/models"),
                         ("GET", "/v1/admin/periods"), ("GET", "/v1/admin/jobs/x"),
                         ("POST", "/v1/admin/models/1/activate")):
        encoded = {k: v.encode("utf-8") for k, v in headers.items()}
        assert client.request(method, path, headers=encoded).status_code == status, (path,
                                                                                     headers)
    assert client.get("/v1/admin/models", headers=ADMIN).status_code == 200


def test_client_key_rejections_store_nothing(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    with make_client(make_settings(tmp_path, sqlite_url, api_key="k3y")) as client:
        store = Store.from_url(sqlite_url)
        try:
            for headers, status in (({}, 401), ({"X-API-Key": ""}, 401),
                                    ({"X-API-Key": "K3Y"}, 403), ({"X-API-Key": "k3y "}, 403)):
                response = client.post("/v1/interactions", json=interactions(("u", "i")),
                                       headers=headers)
                assert response.status_code == status
            assert row_counts(store) == (0, 0, 0)
        finally:
            store.close()


def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens go through hmac.compare_digest (constant time: a wrong token that
    shares a long prefix with the right one takes as long to refuse as one that
    differs at the first byte), as UTF-8 bytes. Timing the comparison on a
    shared machine would only measure the machine."""
    import hmac

    secret = "s" * 4096
    early, late = "x" + "s" * 4095, "s" * 4095 + "x"
    assert same_secret(secret, secret) and not same_secret(early, secret)
    assert not same_secret(late, secret) and not same_secret("", secret)
    assert same_secret("clé", "clé") and not same_secret("cle", "clé")

    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert not same_secret(late, secret)
    assert calls == [(late.encode(), secret.encode())]
