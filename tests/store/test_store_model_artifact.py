"""The model artifact contract: what the worker writes is what the service reads, through
the artifact store's file, and an inconsistent model is refused where it is built or read."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from store import MODEL_FORMAT, ArtifactStore, ModelArtifact, popular_items

N_USERS, N_ITEMS, WIDTH = 3, 5, 4


def _artifact(**changes: Any) -> ModelArtifact:
    fields: dict[str, Any] = {
        "version": 7, "period_id": 2, "strategy": "sml", "created_at": 123.5,
        "user": torch.arange(N_USERS * WIDTH, dtype=torch.float32).view(N_USERS, WIDTH),
        "item": torch.arange(N_ITEMS * WIDTH, dtype=torch.float32).view(N_ITEMS, WIDTH) / 10,
        "user_ids": ["alice", "bob", "é, x"], "item_ids": [f"i{n}" for n in range(N_ITEMS)],
        "seen_indptr": np.array([0, 2, 2, 3]), "seen_items": np.array([4, 0, 1]),
        "popular": np.array([1, 0]),
    }
    fields.update(changes)
    return ModelArtifact(**fields)


def test_an_artifact_survives_the_file_unchanged(tmp_path: Path) -> None:
    artifact = _artifact()
    store = ArtifactStore(tmp_path)
    ref = store.save("model-v000007.pt", artifact.to_payload())
    payload = store.load(ref.path, ref.sha256, ref.size_bytes)
    assert payload["format"] == MODEL_FORMAT
    back = ModelArtifact.from_payload(payload)
    for field in dataclasses.fields(ModelArtifact):
        a, b = getattr(artifact, field.name), getattr(back, field.name)
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        elif isinstance(a, np.ndarray):
            assert np.array_equal(a, b) and b.dtype == np.int64
        else:
            assert a == b, field.name
    assert (back.n_users, back.n_items) == (N_USERS, N_ITEMS)


def test_the_first_format_with_plain_id_lists_is_still_read() -> None:
    payload = _artifact().to_payload()
    payload.update(format="smlrec-model/1", user_ids=["alice", "bob", "é, x"],
                   item_ids=[f"i{n}" for n in range(N_ITEMS)])
    assert ModelArtifact.from_payload(payload).user_ids == ["alice", "bob", "é, x"]


BROKEN = {
    "tables of different widths": {"item": torch.zeros(N_ITEMS, WIDTH + 1)},
    "a table without an embedding": {"user": torch.zeros(N_USERS, 1),
                                     "item": torch.zeros(N_ITEMS, 1)},
    "an id missing": {"user_ids": ["alice", "bob"]},
    "a CSR of another length": {"seen_indptr": np.array([0, 2, 3])},
    "a CSR not starting at 0": {"seen_indptr": np.array([1, 2, 2, 3])},
    "a CSR that ends early": {"seen_indptr": np.array([0, 1, 1, 2])},
    "a CSR going back": {"seen_indptr": np.array([0, 2, 1, 3])},
    "a seen item beyond the table": {"seen_items": np.array([4, 0, N_ITEMS])},
    "a negative seen item": {"seen_items": np.array([4, -1, 1])},
    "a popular item beyond the table": {"popular": np.array([N_ITEMS])},
    "a negative popular item": {"popular": np.array([-1])},
}


@pytest.mark.parametrize("changes", BROKEN.values(), ids=BROKEN.keys())
def test_an_inconsistent_model_cannot_be_built_or_read(changes: dict[str, Any]) -> None:
    """The worker cannot build it (so never writes it), and a file holding it is refused."""
    with pytest.raises(ValueError):
        _artifact(**changes)
    payload = _artifact().to_payload()
    for key, value in changes.items():
        payload[key] = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
    if "user_ids" in changes:
        payload["user_ids"] = changes["user_ids"]
    with pytest.raises(ValueError):
        ModelArtifact.from_payload(payload)


@pytest.mark.parametrize("payload_change", [
    {"format": "smlrec-model/3"}, {"item": torch.full((N_ITEMS, WIDTH), float("inf"))},
    {"user": [[1.0]]}, {"popular": torch.zeros(2, 2, dtype=torch.int64)},
])
def test_a_file_of_another_format_or_with_bad_values_is_refused(
    payload_change: dict[str, Any],
) -> None:
    payload = {**_artifact().to_payload(), **payload_change}
    with pytest.raises(ValueError):
        ModelArtifact.from_payload(payload)


def test_a_missing_entry_is_refused() -> None:
    payload = _artifact().to_payload()
    del payload["seen_items"]
    with pytest.raises(KeyError):
        ModelArtifact.from_payload(payload)


def test_popular_items_rank_by_count_then_index_and_leave_out_the_unseen() -> None:
    """The one popularity the worker writes into artifacts and the service serves
    before any model: counts descending, ties to the lower index, never an item no
    one interacted with, at most ``size``."""
    items = np.array([3, 1, 3, 5, 1, 0, 5, 3])
    assert popular_items(items).tolist() == [3, 1, 5, 0]
    assert popular_items(items, size=2).tolist() == [3, 1]
    assert popular_items(np.array([], dtype=np.int64)).dtype == np.int64
    assert popular_items(np.array([], dtype=np.int64)).tolist() == []
