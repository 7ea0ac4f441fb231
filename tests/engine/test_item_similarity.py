"""engine.similar on its own: cosine ranking, an all-zero vector, catalogues too small
to answer, the per-version norms dropped with their version."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from engine_testkit import random_payload

from engine import similar
from engine.holder import ServingModel


def _model(item: torch.Tensor) -> ServingModel:
    payload = random_payload(2, item.shape[0], item.shape[1] - 1, [[], []], popular=[0])
    payload["item"] = item
    return ServingModel.from_payload(payload, quantize=False)


def test_items_rank_by_cosine_not_by_length_or_bias() -> None:
    item = torch.tensor([[1.0, 0.0, 0.0],  # the query
                         [10.0, 1.0, -5.0],  # nearly the same direction, long, low bias
                         [0.0, 1.0, 9.0],  # orthogonal, high bias
                         [-1.0, 0.0, 0.0],  # opposite
                         [0.0, 0.0, 0.0]])  # no direction: cosine 0
    top = similar.similar_items(_model(item), 0, 10)
    assert top.items.tolist() == [1, 2, 4, 3] or top.items.tolist() == [1, 4, 2, 3]
    np.testing.assert_allclose(top.scores, [10 / np.sqrt(101), 0.0, 0.0, -1.0], atol=1e-6)
    assert similar.similar_items(_model(item), 0, 1).items.tolist() == [1]


def test_a_catalogue_of_one_item_has_nothing_similar_and_indices_are_checked() -> None:
    model = _model(torch.ones(1, 3))
    top = similar.similar_items(model, 0, 5)
    assert len(top.items) == 0 and len(top.scores) == 0
    with pytest.raises(IndexError):
        similar.similar_items(model, 1, 5)


def test_the_norms_are_computed_once_per_version_and_dropped_with_it() -> None:
    model = _model(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
    similar.similar_items(model, 0, 2)
    first = similar._inverse_norms[model]
    similar.similar_items(model, 3, 2)
    assert similar._inverse_norms[model] is first
    before = len(similar._inverse_norms)
    del model
    gc.collect()
    assert len(similar._inverse_norms) == before - 1
