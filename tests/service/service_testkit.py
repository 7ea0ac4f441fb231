"""Helpers of the service tests (imported by the test modules; fixtures live in
conftest.py): settings, request bodies, row counts, and model artifacts written
the way the worker writes them."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from smlrec.settings import Settings
from store import ArtifactStore, Store

with warnings.catch_warnings():  # starlette's notice about its httpx-based client
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["ClientFactory", "TestClient"]

ClientFactory = Callable[..., AbstractContextManager[TestClient]]

POSTGRES_URL = os.environ.get(
    "SMLREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# The service tests' Redis database; each test's keys sit under a prefix of its
# own (the ``redis_prefix`` fixture), so concurrent runs never meet.
SERVICE_REDIS_URL = os.environ.get("SMLREC_TEST_SERVICE_REDIS_URL", "redis://127.0.0.1:6379/13")
CLOSED_PORT_PG = "postgresql://postgres@127.0.0.1:1/test"
CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"
ADMIN = {"Authorization": "Bearer t"}


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Test settings: admin token "t", no client key, manual periods, fast polling."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "model_dir": tmp_path / "models",
        "admin_token": "t",
        "api_key": None,
        "redis_url": None,
        "period": "manual",
        "swap_poll_seconds": 0.1,
        "embed_dim": 8,
    }
    values.update(overrides)
    return Settings(**values)


def app_of(client: TestClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[assignment]
    return app


def served_version(client: TestClient) -> int | None:
    """The version the app's holder serves right now."""
    version: int | None = app_of(client).state.runtime.holder.version
    return version


def wait_for(condition: Callable[[], bool], timeout: float = 600.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def interactions(*pairs: tuple[str, str], **fields: Any) -> dict[str, Any]:
    """A POST /v1/interactions body, ``fields`` added to every interaction."""
    return {"interactions": [{"user_id": u, "item_id": i, **fields} for u, i in pairs]}


def row_counts(store: Store) -> tuple[int, int, int]:
    """(interactions, users, items) in the database."""
    return store.count_open(), len(store.user_ids()), len(store.item_ids())


def metric_value(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels) of /metrics."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def csr(
    user_ids: list[str], item_ids: list[str], seen: dict[str, Sequence[str]]
) -> tuple[np.ndarray, np.ndarray]:
    item_pos = {e: i for i, e in enumerate(item_ids)}
    rows = [sorted(item_pos[i] for i in seen.get(u, ())) for u in user_ids]
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    flat = np.array([i for r in rows for i in r], dtype=np.int64)
    return indptr, flat


class ModelWriter:
    """Writes model versions with the worker's own writer: the payload is
    ``worker.versions.model_payload`` (the function a boundary writes with, so a
    change of the worker's format reaches every service test), saved with
    ``ArtifactStore.save``, then ``record_version``, then (optionally)
    ``set_active_version``, in the order ``PeriodTrainer._write_version`` keeps.
    Users and items are the store's, in its dense order; the weights are random
    (from ``seed``) unless given."""

    def __init__(self, store: Store, model_dir: Path) -> None:
        self.store = store
        self.artifacts = ArtifactStore(model_dir)

    def write(
        self,
        *,
        dim: int = 4,
        seed: int = 0,
        user: torch.Tensor | None = None,
        item: torch.Tensor | None = None,
        seen: dict[str, Sequence[str]] | None = None,
        popular: Sequence[str] | None = None,
        activate: bool = True,
        period_id: int = 0,
        train_seconds: float = 1.5,
        strategy: str = "sml",
    ) -> int:
        from sml.model import MFWeights
        from worker.evaluate import SeenIndex
        from worker.versions import model_name, model_payload

        user_ids, item_ids = self.store.user_ids(), self.store.item_ids()
        generator = torch.Generator().manual_seed(seed)
        if user is None:
            user = torch.randn(len(user_ids), dim + 1, generator=generator)
        if item is None:
            item = torch.randn(len(item_ids), dim + 1, generator=generator)
        n_users, n_items = user.shape[0], item.shape[0]
        item_pos = {e: i for i, e in enumerate(item_ids[:n_items])}
        pairs = [(u, item_pos[i]) for u, uid in enumerate(user_ids[:n_users])
                 for i in (seen or {}).get(uid, ())]
        index = SeenIndex.build(np.array([u for u, _ in pairs], dtype=np.int64),
                                np.array([i for _, i in pairs], dtype=np.int64), n_users)
        expected = (self.store.latest_version() or 0) + 1
        payload = model_payload(
            version=expected, period_id=period_id, strategy=strategy,
            weights=MFWeights(user.to(torch.float32), item.to(torch.float32)),
            user_ids=user_ids, item_ids=item_ids, seen=index,
            popular=np.array([item_pos[i] for i in popular or []], dtype=np.int64),
        )
        ref = self.artifacts.save(model_name(expected), payload)
        version = self.store.record_version(
            period_id=period_id, strategy=strategy, path=ref.path, sha256=ref.sha256,
            size_bytes=ref.size_bytes, train_seconds=train_seconds, n_users=n_users,
            n_items=n_items,
        )
        assert version == expected
        if activate:
            self.store.set_active_version(version)
        return version

    def corrupt(self, version: int) -> None:
        """Flip bytes in the middle of a version's artifact file."""
        info = self.store.get_version(version)
        assert info is not None
        path = self.artifacts.root / info.path
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        path.write_bytes(bytes(data))
