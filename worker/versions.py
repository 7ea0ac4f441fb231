"""Model versions as the worker writes them: the artifact's payload from a
strategy's weights (deleted users' rows zeroed, their ids empty), saved atomically,
then recorded in the store (not yet served: activating is the caller's choice)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sml.model import MFWeights
from store import ArtifactStore, ModelArtifact, PeriodArrays, Store, popular_items
from worker.evaluate import SeenIndex

log = logging.getLogger(__name__)


def model_name(version: int) -> str:
    return f"model-v{version:06d}.pt"


def model_payload(
    *,
    version: int,
    period_id: int,
    strategy: str,
    weights: MFWeights,
    user_ids: list[str],
    item_ids: list[str],
    seen: SeenIndex,
    popular: np.ndarray,
) -> dict[str, Any]:
    """The model artifact's payload (:class:`store.ModelArtifact`), checked."""
    n_users, n_items = weights.n_users, weights.n_items
    if len(user_ids) < n_users or len(item_ids) < n_items:
        raise ValueError(
            f"the store knows {len(user_ids)} users / {len(item_ids)} items, "
            f"fewer than the model's {n_users} / {n_items}"
        )
    indptr = seen.indptr[: n_users + 1]
    if len(indptr) < n_users + 1:  # users without any interaction at the end of the table
        indptr = np.concatenate([indptr, np.full(n_users + 1 - len(indptr), indptr[-1])])
    artifact = ModelArtifact(
        version=int(version),
        period_id=int(period_id),
        strategy=strategy,
        created_at=time.time(),
        user=weights.user.detach().to(torch.float32).contiguous(),  # (n_users, dim + 1)
        item=weights.item.detach().to(torch.float32).contiguous(),  # (n_items, dim + 1)
        user_ids=list(user_ids[:n_users]),
        item_ids=list(item_ids[:n_items]),
        seen_indptr=indptr.astype(np.int64),  # (n_users + 1,)
        seen_items=seen.items[: int(indptr[-1])].astype(np.int64),
        popular=popular.astype(np.int64),  # (<= 1000,)
    )
    return artifact.to_payload()


def write_version(
    store: Store,
    artifacts: ArtifactStore,
    check_leader: Callable[[], None],
    *,
    period_id: int,
    strategy: str,
    weights: MFWeights,
    arrays: PeriodArrays,
    seen: SeenIndex,
    train_seconds: float,
) -> int:
    """Write ``strategy``'s model after ``period_id`` as the next version and record
    it; ``check_leader`` runs before each write. Returns the version recorded."""
    expected = (store.latest_version() or 0) + 1
    payload = model_payload(
        version=expected,
        period_id=period_id,
        strategy=strategy,
        weights=weights.without_users(store.deleted_user_indices()),  # deleted: zero rows
        user_ids=store.user_ids(),
        item_ids=store.item_ids(),
        seen=seen,
        popular=popular_items(arrays.items),
    )
    check_leader()
    ref = artifacts.save(model_name(expected), payload)
    check_leader()
    version = store.record_version(
        period_id=period_id,
        strategy=strategy,
        path=ref.path,
        sha256=ref.sha256,
        size_bytes=ref.size_bytes,
        train_seconds=train_seconds,
        n_users=weights.n_users,
        n_items=weights.n_items,
    )
    if version != expected:
        log.warning("version %d was recorded with the artifact of %d", version, expected)
    return version
