"""The model this replica serves, and how it is swapped.

A :class:`ServingModel` is built once per version from its verified artifact and
never changes. :class:`ModelHolder` keeps one reference to the current one;
a swap loads and checks the new version completely, then moves that reference
under a lock. A request takes the reference once and keeps the object it took,
so requests in flight finish on the version they started with.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from torch import Tensor

from engine.metrics import ServiceMetrics
from engine.quantized import MIN_ITEMS, QuantizedItems
from store import ArtifactCorrupt, ArtifactStore, ModelArtifact, Store, StoreUnavailable

log = logging.getLogger(__name__)

RETRY_FAILED_AFTER_S = 30.0  # a version that failed to load is retried this late by the sync
SCORE_BLOCK = 64  # items per block of the scorer's blockwise top-k (engine.scorer)


class ModelLoadError(Exception):
    """A version cannot be served: unknown, or its artifact is missing or corrupt."""


@dataclass(frozen=True, eq=False)
class ServingModel:
    """One model version, laid out for scoring: everything a request needs is
    computed here, once per version (contiguous tables, both id maps), so a
    request does no more than look up and multiply."""

    version: int
    period_id: int
    strategy: str
    user_emb: Tensor  # (n_users, d) contiguous
    item_emb: Tensor  # (n_items, d) contiguous: the first rows of item_emb_padded
    item_bias: Tensor  # (n_items,): the first entries of item_bias_padded
    item_emb_padded: Tensor  # (n_padded, d): zero rows up to a multiple of SCORE_BLOCK
    item_bias_padded: Tensor  # (n_padded,): -inf on the padding rows, so they never rank
    user_ids: list[str]  # dense user idx -> external id
    user_index: dict[str, int]  # external user id -> dense idx
    item_ids: list[str]  # dense item idx -> external id
    item_index: dict[str, int]  # external item id -> dense idx
    item_prefix: list[bytes]  # dense item idx -> b'{"item_id":<its id as JSON>,"score":'
    seen_indptr: np.ndarray  # (n_users + 1,) int64
    seen_items: np.ndarray  # (nnz,) int64: items of user u at [indptr[u], indptr[u+1])
    popular: np.ndarray  # (<= 1000,) int64 item idx, most popular first
    quantized: QuantizedItems | None  # int8 item codes (large catalogs only)

    @property
    def n_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_emb.shape[0])

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], previous: ServingModel | None = None, *,
        quantize: bool = True,
    ) -> ServingModel:
        """Check an artifact payload (:class:`store.ModelArtifact`) and lay it out for scoring.
        Id maps equal to ``previous``'s (consecutive versions usually share them)
        are reused rather than rebuilt: a swap then allocates little besides the
        tables. With ``quantize``, catalogs of at least ``MIN_ITEMS`` items also get
        int8 codes (engine.quantized). Raises ModelLoadError when the payload is
        inconsistent."""
        try:
            return cls._build(payload, previous, quantize)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            raise ModelLoadError(f"malformed model artifact: {error!r}") from error

    @classmethod
    def _build(cls, payload: dict[str, Any], previous: ServingModel | None,
               quantize: bool) -> ServingModel:
        artifact = ModelArtifact.from_payload(payload)
        user, item, n_items = artifact.user, artifact.item, artifact.n_items
        n_padded = -(-n_items // SCORE_BLOCK) * SCORE_BLOCK
        item_emb_padded = torch.zeros(n_padded, item.shape[1] - 1)  # (n_padded, d)
        item_emb_padded[:n_items] = item[:, :-1]
        item_bias_padded = torch.full((n_padded,), -torch.inf)  # (n_padded,)
        item_bias_padded[:n_items] = item[:, -1]
        return cls(
            version=artifact.version,
            period_id=artifact.period_id,
            strategy=artifact.strategy,
            user_emb=user[:, :-1].contiguous(),
            item_emb=item_emb_padded[:n_items],
            item_bias=item_bias_padded[:n_items],
            item_emb_padded=item_emb_padded,
            item_bias_padded=item_bias_padded,
            **_user_maps(artifact.user_ids, previous),
            **_item_maps(artifact.item_ids, previous),
            seen_indptr=artifact.seen_indptr,
            seen_items=artifact.seen_items,
            popular=np.asarray(list(dict.fromkeys(artifact.popular.tolist())), dtype=np.int64),
            quantized=QuantizedItems.build(item_emb_padded, item_bias_padded, n_items,
                                           SCORE_BLOCK)
            if quantize and n_items >= MIN_ITEMS else None,
        )


def _user_maps(user_ids: list[str], previous: ServingModel | None) -> dict[str, Any]:
    """``user_ids`` and ``user_index``, sharing ``previous``'s where they agree.
    Dense ids are append-only, so a new version's list usually extends the
    previous one: its map is then a copy plus the new ids (a copy runs in C; a
    rebuild of 100,000 entries would hold the GIL for tens of milliseconds)."""
    old = previous.user_ids if previous is not None else []
    if previous is not None and user_ids[: len(old)] == old:
        if len(user_ids) == len(old):
            return {"user_ids": old, "user_index": previous.user_index}
        index = previous.user_index.copy()
        index.update(zip(user_ids[len(old):], range(len(old), len(user_ids)), strict=True))
        return {"user_ids": old + user_ids[len(old):], "user_index": index}
    return {"user_ids": user_ids, "user_index": {uid: idx for idx, uid in enumerate(user_ids)}}


def _item_maps(item_ids: list[str], previous: ServingModel | None) -> dict[str, Any]:
    """``item_ids``, ``item_index`` and ``item_prefix``, sharing or extending
    ``previous``'s as :func:`_user_maps` does."""
    old = previous.item_ids if previous is not None else []
    if previous is not None and item_ids[: len(old)] == old:
        if len(item_ids) == len(old):
            return {"item_ids": old, "item_index": previous.item_index,
                    "item_prefix": previous.item_prefix}
        tail = item_ids[len(old):]
        index = previous.item_index.copy()
        index.update(zip(tail, range(len(old), len(item_ids)), strict=True))
        return {"item_ids": old + tail, "item_index": index,
                "item_prefix": previous.item_prefix + _item_prefixes(tail)}
    return {"item_ids": item_ids,
            "item_index": {iid: idx for idx, iid in enumerate(item_ids)},
            "item_prefix": _item_prefixes(item_ids)}


def _item_prefixes(item_ids: list[str]) -> list[bytes]:
    """What each item's entry in a response body starts with (its score follows)."""
    return [b'{"item_id":' + orjson.dumps(iid) + b',"score":' for iid in item_ids]


def _refused(current: ServingModel | None, model: ServingModel, explicit: bool) -> bool:
    if current is None:
        return False
    if current.version == model.version:
        return True
    if not explicit and model.version < current.version:
        log.info("not swapping back from version %d to %d", current.version, model.version)
        return True
    return False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc's ``malloc_trim``). Model
    tables are tens of megabytes; without this, the heap keeps what each swap
    freed and resident memory ratchets up with every version."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def settle_long_lived_objects() -> None:
    """Move every object alive now (a model's id maps, the recent interactions:
    hundreds of thousands of them) out of the cyclic garbage collector's reach.
    Reference counting still frees them; only full collections, which would
    otherwise walk them all and pause serving for tens of milliseconds, skip them."""
    gc.freeze()


class ModelHolder:
    """Holds the current :class:`ServingModel` and swaps versions in."""

    def __init__(self, store: Store, artifacts: ArtifactStore, metrics: ServiceMetrics, *,
                 quantize: bool = True) -> None:
        self._store = store
        self._quantize = quantize
        self._artifacts = artifacts
        self._metrics = metrics
        self._current: ServingModel | None = None
        self._ref_lock = threading.Lock()  # guards the reference
        self._load_lock = threading.Lock()  # one load at a time
        self._failed: dict[int, float] = {}  # version -> monotonic time it may be retried
        self._listeners: list[Callable[[ServingModel], None]] = []
        self._preparers: list[Callable[[ServingModel], None]] = []
        self._stagers: list[Callable[[ServingModel], object]] = []

    @property
    def quantize(self) -> bool:
        """Whether loaded versions get int8 tables (``SMLREC_INT8_SCORING``)."""
        return self._quantize

    def on_install(self, listener: Callable[[ServingModel], None]) -> None:
        """Call ``listener(model)`` after each swap (on the swapping thread)."""
        self._listeners.append(listener)

    def before_install(self, preparer: Callable[[ServingModel], None]) -> None:
        """Call ``preparer(model)`` before a swap serves ``model`` (on the swapping
        thread; requests go on with the current model meanwhile). An error is
        logged and the swap goes on."""
        self._preparers.append(preparer)

    def stage_with(self, stager: Callable[[ServingModel], object]) -> None:
        """Call ``stager(model)`` on each version this replica takes up from the
        store (:meth:`sync`), once it is loaded and before it serves, with no lock
        held: the current version serves meanwhile, and an activation may come
        (then the staged version is not served). Not called on activations, which
        serve at once. An error is logged and the swap goes on."""
        self._stagers.append(stager)

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
            model = ServingModel.from_payload(payload, previous=self._current,
                                              quantize=self._quantize)
            del payload  # its tables are copied; let them go before the swap
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
        if _refused(self._current, model, explicit):
            return False
        for preparer in self._preparers:
            try:
                preparer(model)
            except Exception:  # serving the new version matters more than its extras
                log.exception("swap preparation failed for version %d", model.version)
        with self._ref_lock:
            old = self._current
            if _refused(old, model, explicit):
                return False
            self._current = model
        self._metrics.swaps.inc()
        self._metrics.active_version.set(model.version)
        log.info("now serving model version %d (was %s)", model.version,
                 old.version if old is not None else None)
        for listener in self._listeners:
            try:
                listener(model)
            except Exception:  # a listener must not undo a swap that happened
                log.exception("swap listener failed for version %d", model.version)
        del old  # the old version lives on only in requests still in flight
        release_freed_memory()
        settle_long_lived_objects()
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
        """Serve the store's active version if this replica does not yet (staged
        first: :meth:`stage_with`). A version that failed to load recently is not
        retried before its time. True if a swap happened. Raises StoreUnavailable."""
        with self._load_lock:  # read the active version and load it with no activation between
            active = self._store.active_version()
            if active is None or active == self.version:
                return False
            retry_at = self._failed.get(active)
            if retry_at is not None and time.monotonic() < retry_at:
                return False
            try:
                model = self.load(active)
            except ModelLoadError:
                return False
            if not self._stagers:
                return self.install(model, explicit=True)
        for stager in self._stagers:
            try:
                stager(model)
            except Exception:  # serving the new version matters more than its extras
                log.exception("staging failed for version %d", model.version)
        with self._load_lock:  # still the active version, and no activation between
            if self._store.active_version() != active:
                log.info("version %d is no longer active; not serving it", active)
                return False
            return self.install(model, explicit=True)

    def sync_quietly(self) -> None:
        """:meth:`sync`, logging (not raising) a database outage."""
        try:
            self.sync()
        except StoreUnavailable as error:
            log.warning("cannot check the active model version: %s", error)
