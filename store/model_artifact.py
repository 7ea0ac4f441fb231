"""The model artifact: one trained version as the worker writes it and the service reads
it, typed and checked in one place (the file itself is :class:`ArtifactStore`'s).

On disk it is a dict of tensors and plain values (``torch.save``, read back with
``weights_only=True``):

- ``format``: ``"smlrec-model/2"`` (``/1``, still read, held the ids as lists);
- ``version``, ``period_id``, ``strategy``, ``created_at``;
- ``user`` (n_users, d + 1) and ``item`` (n_items, d + 1) float32: embedding then
  bias; a user's bias does not change its ranking, an item's does;
- ``user_ids``, ``item_ids``: the external ids in dense order, packed
  (:func:`store.pack_ids`);
- ``seen_indptr`` (n_users + 1,) and ``seen_items`` (nnz,) int64: each user's
  interacted items as a CSR, left out of their recommendations;
- ``popular`` (<= 1000,) int64: item indices, most popular first (the answer for
  users the model does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from store.artifacts import pack_ids, unpack_ids

MODEL_FORMAT = "smlrec-model/2"
READABLE_FORMATS = ("smlrec-model/1", MODEL_FORMAT)
POPULAR_SIZE = 1000  # items in an artifact's popular list (and the service's own)


def popular_items(items: np.ndarray, size: int = POPULAR_SIZE) -> np.ndarray:
    """Up to ``size`` item indices by interaction count in ``items``, most interacted
    first (ties: lower index first); items never interacted with are left out."""
    if len(items) == 0:
        return np.empty(0, dtype=np.int64)
    counts = np.bincount(items)  # (max idx + 1,)
    order = np.argsort(-counts, kind="stable")[:size]
    return order[counts[order] > 0].astype(np.int64)


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    """One model version, checked: tables of matching widths, one id per row, a seen
    CSR and a popular list within the item table, finite weights."""

    version: int
    period_id: int
    strategy: str
    created_at: float
    user: Tensor  # (n_users, d + 1) float32
    item: Tensor  # (n_items, d + 1) float32
    user_ids: list[str]  # dense user index -> external id
    item_ids: list[str]  # dense item index -> external id
    seen_indptr: np.ndarray  # (n_users + 1,) int64
    seen_items: np.ndarray  # (nnz,) int64
    popular: np.ndarray  # (<= POPULAR_SIZE,) int64

    def __post_init__(self) -> None:
        _check(self)

    @property
    def n_users(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item.shape[0])

    def to_payload(self) -> dict[str, Any]:
        """What :meth:`ArtifactStore.save` writes (format ``MODEL_FORMAT``)."""
        return {
            "format": MODEL_FORMAT,
            "version": self.version,
            "period_id": self.period_id,
            "strategy": self.strategy,
            "created_at": self.created_at,
            "user": self.user,
            "item": self.item,
            "user_ids": pack_ids(self.user_ids),
            "item_ids": pack_ids(self.item_ids),
            "seen_indptr": torch.from_numpy(self.seen_indptr),
            "seen_items": torch.from_numpy(self.seen_items),
            "popular": torch.from_numpy(self.popular),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ModelArtifact:
        """Read a payload of any of ``READABLE_FORMATS``. Raises ValueError (or KeyError
        for a missing entry) when it is not a consistent model."""
        if payload.get("format") not in READABLE_FORMATS:
            raise ValueError(
                f"format {payload.get('format')!r}, expected one of {READABLE_FORMATS}")
        user = _float_matrix(payload["user"], "user")
        item = _float_matrix(payload["item"], "item")
        return cls(
            version=int(payload["version"]),
            period_id=int(payload["period_id"]),
            strategy=str(payload["strategy"]),
            created_at=float(payload.get("created_at", 0.0)),
            user=user,
            item=item,
            user_ids=unpack_ids(payload["user_ids"], user.shape[0]),
            item_ids=unpack_ids(payload["item_ids"], item.shape[0]),
            seen_indptr=_index_array(payload["seen_indptr"]),
            seen_items=_index_array(payload["seen_items"]),
            popular=_index_array(payload["popular"]),
        )


def _check(a: ModelArtifact) -> None:
    if a.user.dim() != 2 or a.item.dim() != 2:
        raise ValueError("the user and item tables must be 2-d")
    if a.user.shape[1] != a.item.shape[1] or a.user.shape[1] < 2:
        raise ValueError(f"user {tuple(a.user.shape)} and item {tuple(a.item.shape)} disagree")
    if len(a.user_ids) != a.n_users or len(a.item_ids) != a.n_items:
        raise ValueError("id lists do not match the embedding tables")
    indptr, seen = a.seen_indptr, a.seen_items
    if len(indptr) != a.n_users + 1 or indptr[0] != 0 or indptr[-1] != len(seen):
        raise ValueError("seen CSR does not match the user table")
    if np.any(np.diff(indptr) < 0) or (len(seen) and (seen.min() < 0 or seen.max() >= a.n_items)):
        raise ValueError("seen CSR holds out-of-range entries")
    if len(a.popular) and (a.popular.min() < 0 or a.popular.max() >= a.n_items):
        raise ValueError("popular list holds unknown items")


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
