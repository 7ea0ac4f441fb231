"""The model this replica serves, and how it is swapped.

A :class:`ServingModel` is built once per version from its verified artifact and
never changes. :class:`ModelHolder` keeps one reference to the current one;
a swap loads and checks the new version completely, then moves that reference
under a lock. A request takes the reference once and keeps the object it took,
so requests in flight finish on the version they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from service.metrics import ServiceMetrics
from store import ArtifactCorrupt, ArtifactStore, Store, StoreUnavailable

log = logging.getLogger(__name__)

MODEL_FORMAT = "smlrec-model/1"
RETRY_FAILED_AFTER_S = 30.0  # a version that failed to load is retried this late by the sync


class ModelLoadError(Exception):
    """A version cannot be served: unknown, or its artifact is missing or corrupt."""


@dataclass(frozen=True, eq=False)
class ServingModel:
    """One model version, laid out for scoring."""

    version: int
    period_id: int
    strategy: str
    user_emb: Tensor  # (n_users, d) contiguous
    item_emb: Tensor  # (n_items, d) contiguous
    item_bias: Tensor  # (n_items,)
    user_index: dict[str, int]  # external user id -> dense idx
    item_ids: list[str]  # dense item idx -> external id
    seen_indptr: np.ndarray  # (n_users + 1,) int64
    seen_items: np.ndarray  # (nnz,) int64: items of user u at [indptr[u], indptr[u+1])
    popular: np.ndarray  # (<= 1000,) int64 item idx, most popular first

    @property
    def n_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_emb.shape[0])

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ServingModel:
        """Check an artifact payload ("smlrec-model/1") and lay it out for scoring.
        Raises ModelLoadError when it is inconsistent."""
        try:
            return cls._build(payload)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            raise ModelLoadError(f"malformed model artifact: {error!r}") from error

    @classmethod
    def _build(cls, payload: dict[str, Any]) -> ServingModel:
        if payload.get("format") != MODEL_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {MODEL_FORMAT!r}")
        user = _float_matrix(payload["user"], "user")  # (n_users, d + 1)
        item = _float_matrix(payload["item"], "item")  # (n_items, d + 1)
        if user.shape[1] != item.shape[1] or user.shape[1] < 2:
            raise ValueError(f"user {tuple(user.shape)} and item {tuple(item.shape)} disagree")
        n_users, n_items = user.shape[0], item.shape[0]
        user_ids = [str(u) for u in payload["user_ids"]]
        item_ids = [str(i) for i in payload["item_ids"]]
        if len(user_ids) != n_users or len(item_ids) != n_items:
            raise ValueError("id lists do not match the embedding tables")
        indptr = _index_array(payload["seen_indptr"])
        seen = _index_array(payload["seen_items"])
        if len(indptr) != n_users + 1 or indptr[0] != 0 or indptr[-1] != len(seen):
            raise ValueError("seen CSR does not match the user table")
        if np.any(np.diff(indptr) < 0) or (len(seen) and (seen.min() < 0 or seen.max() >= n_items)):
            raise ValueError("seen CSR holds out-of-range entries")
        popular = _index_array(payload["popular"])
        if len(popular) and (popular.min() < 0 or popular.max() >= n_items):
            raise ValueError("popular list holds unknown items")
        return cls(
            version=int(payload["version"]),
            period_id=int(payload["period_id"]),
            strategy=str(payload["strategy"]),
            user_emb=user[:, :-1].contiguous(),
            item_emb=item[:, :-1].contiguous(),
            item_bias=item[:, -1].contiguous(),
            user_index={uid: idx for idx, uid in enumerate(user_ids)},
            item_ids=item_ids,
            seen_indptr=indptr,
            seen_items=seen,
            popular=np.asarray(list(dict.fromkeys(popular.tolist())), dtype=np.int64),
        )


def _float_matrix(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor) or value.dim() != 2:
        raise ValueError(f"{name} is not a 2-d tensor")
    matrix = value.detach().to(torch.float32)
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} holds non-finite values")
    return matrix


def _index_array(value: Any) -> np.ndarray:
    array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.ndim != 1:
        raise ValueError("index arrays must be 1-d")
    return np.ascontiguousarray(array, dtype=np.int64)


class ModelHolder:
    """Holds the current :class:`ServingModel` and swaps versions in."""

    def __init__(self, store: Store, artifacts: ArtifactStore, metrics: ServiceMetrics) -> None:
        self._store = store
        self._artifacts = artifacts
        self._metrics = metrics
        self._current: ServingModel | None = None
        self._ref_lock = threading.Lock()  # guards the reference
        self._load_lock = threading.Lock()  # one load at a time
        self._failed: dict[int, float] = {}  # version -> monotonic time it may be retried

    @property
    def current(self) -> ServingModel | None:
        """The model to serve now (take it once per request)."""
        return self._current

    @property
    def version(self) -> int | None:
        current = self._current
        return current.version if current is not None else None

    def load(self, version: int) -> ServingModel:
        """Read, verify and lay out ``version`` without serving it. Raises
        ModelLoadError (unknown version, corrupt artifact; counted and logged)
        or StoreUnavailable."""
        info = self._store.get_version(version)
        if info is None:
            raise ModelLoadError(f"version {version} is not recorded")
        try:
            started = time.perf_counter()
            payload = self._artifacts.load(info.path, info.sha256, info.size_bytes)
            model = ServingModel.from_payload(payload)
            if model.version != version:
                raise ModelLoadError(f"artifact {info.path} holds version {model.version}")
        except (ArtifactCorrupt, ModelLoadError) as error:
            self._metrics.swap_failures.inc()
            self._failed[version] = time.monotonic() + RETRY_FAILED_AFTER_S
            log.error("cannot load model version %d, keeping version %s: %s",
                      version, self.version, error)
            raise ModelLoadError(str(error)) from error
        self._failed.pop(version, None)
        log.info("loaded model version %d (%d users, %d items) in %.2f s",
                 version, model.n_users, model.n_items, time.perf_counter() - started)
        return model

    def install(self, model: ServingModel, *, explicit: bool) -> bool:
        """Serve ``model`` from now on. Refused (False) when it is not newer than
        the current one, unless ``explicit`` (an activated version, e.g. a rollback)."""
        with self._ref_lock:
            old = self._current
            if old is not None and old.version == model.version:
                return False
            if old is not None and not explicit and model.version < old.version:
                log.info("not swapping back from version %d to %d", old.version, model.version)
                return False
            self._current = model
        self._metrics.swaps.inc()
        self._metrics.active_version.set(model.version)
        log.info("now serving model version %d (was %s)", model.version,
                 old.version if old is not None else None)
        return True

    def swap_to(self, version: int, *, explicit: bool = False) -> bool:
        """Load ``version`` and serve it (see :meth:`install`). A version that
        cannot be loaded leaves the current one serving and raises ModelLoadError."""
        with self._load_lock:
            if self.version == version:
                return False
            return self.install(self.load(version), explicit=explicit)

    def activate(self, version: int, commit: Callable[[], None]) -> None:
        """Load ``version``, call ``commit`` (which makes it the store's active
        version), then serve it, with no other swap in between. Nothing changes if
        the load or ``commit`` raises."""
        with self._load_lock:
            model = self.load(version) if self.version != version else None
            commit()
            if model is not None:
                self.install(model, explicit=True)

    def sync(self) -> bool:
        """Serve the store's active version if this replica does not yet.
        A version that failed to load recently is not retried before its time.
        True if a swap happened. Raises StoreUnavailable."""
        with self._load_lock:  # read the active version and swap with no activation between
            active = self._store.active_version()
            if active is None or active == self.version:
                return False
            retry_at = self._failed.get(active)
            if retry_at is not None and time.monotonic() < retry_at:
                return False
            try:
                return self.install(self.load(active), explicit=True)
            except ModelLoadError:
                return False

    def sync_quietly(self) -> None:
        """:meth:`sync`, logging (not raising) a database outage."""
        try:
            self.sync()
        except StoreUnavailable as error:
            log.warning("cannot check the active model version: %s", error)
