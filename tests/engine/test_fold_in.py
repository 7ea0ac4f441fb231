"""Fold-in: the vector fitted to a new user's interactions with the items fixed
ranks what they interacted with, and what lies near it, above the rest; the same
interactions give the same answer; what the model does not know is ignored."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from engine_testkit import random_payload

from engine.foldin import fit_user, fold_in_top_k, history_seed, moves
from engine.holder import ServingModel
from store import ModelArtifact


def _clustered(n_items: int = 60, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items in three tight groups along three axes, equal biases."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 0.05, size=(n_items, dim))
    for group in range(3):
        emb[group::3, group] += 2.0
    return emb.astype(np.float32), np.zeros(n_items, dtype=np.float32)


def _model(emb: np.ndarray, bias: np.ndarray) -> ServingModel:
    item = torch.from_numpy(np.concatenate([emb, bias[:, None]], axis=1))
    artifact = ModelArtifact(
        version=1, period_id=0, strategy="sml", created_at=time.time(),
        user=torch.zeros(1, emb.shape[1] + 1), item=item, user_ids=["u0"],
        item_ids=[f"i{n}" for n in range(len(emb))], seen_indptr=np.zeros(2, dtype=np.int64),
        seen_items=np.zeros(0, dtype=np.int64), popular=np.arange(len(emb), dtype=np.int64))
    return ServingModel.from_payload(artifact.to_payload(), quantize=False)


def test_the_fitted_vector_prefers_the_group_the_user_chose() -> None:
    emb, bias = _clustered()
    user = fit_user(emb, bias, np.array([1, 4, 7]), l2=1.0, seed=3)  # group 1
    scores = emb @ user + bias
    group = np.arange(len(emb)) % 3
    assert scores[group == 1].min() > scores[group != 1].max()
    again = fit_user(emb, bias, np.array([1, 4, 7]), l2=1.0, seed=3)
    assert np.array_equal(user, again)
    tighter = fit_user(emb, bias, np.array([1, 4, 7]), l2=30.0, seed=3)
    assert np.linalg.norm(tighter) < np.linalg.norm(user)


def test_fold_in_answers_leave_out_what_they_must_and_ignore_unknown_items() -> None:
    emb, bias = _clustered()
    model = _model(emb, bias)
    history = np.array([2, 5, 8, 10_000])  # group 2, and an item the model does not know
    top = fold_in_top_k(model, "new", history, 10, l2=1.0, exclude=history)
    assert top is not None and len(top.items) == 10
    assert set(top.items.tolist()) <= {i for i in range(len(emb)) if i % 3 == 2} - {2, 5, 8}
    assert np.all(np.diff(top.scores) <= 0)
    with_seen = fold_in_top_k(model, "new", history, 3, l2=1.0)
    assert with_seen is not None and set(with_seen.items.tolist()) <= {
        i for i in range(len(emb)) if i % 3 == 2}
    assert fold_in_top_k(model, "new", np.array([10_000, -1]), 10, l2=1.0) is None
    everything = fold_in_top_k(model, "new", history, 1000, l2=1.0, exclude=history)
    assert everything is not None and len(everything.items) == len(emb) - 3


@pytest.mark.parametrize("order", [[3, 6, 9], [9, 3, 6]])
def test_the_same_interactions_give_the_same_answer(order: list[int]) -> None:
    emb, bias = _clustered()
    model = _model(emb, bias)
    top = fold_in_top_k(model, "u9", np.array(order), 5, l2=1.0)
    reference = fold_in_top_k(model, "u9", np.array([3, 6, 9]), 5, l2=1.0)
    assert top is not None and reference is not None
    assert top.items.tolist() == reference.items.tolist()
    assert history_seed("u9", np.array([3, 6, 9])) != history_seed("u8", np.array([3, 6, 9]))


def test_a_known_users_vector_moves_from_where_the_model_had_it() -> None:
    """With a prior (the user's vector in the model) the fit starts there and its L2
    pulls back to it: a huge weight leaves it in place, a small one lets the items move
    it towards them. ``moves`` says whether there is anything new to move it with."""
    rng = np.random.default_rng(0)
    item_emb, item_bias = rng.normal(size=(50, 6)), np.zeros(50)
    prior = rng.normal(size=6)
    positives = np.array([3, 7, 11])
    still = fit_user(item_emb, item_bias, positives, l2=1e9, prior=prior)
    np.testing.assert_allclose(still, prior, atol=1e-6)
    moved = fit_user(item_emb, item_bias, positives, l2=0.1, prior=prior)
    assert (item_emb[positives] @ moved).mean() > (item_emb[positives] @ prior).mean()
    model = ServingModel.from_payload(random_payload(2, 10, 4, [[1, 2], []], seed=1))
    assert not moves(model, 0, None) and not moves(model, 0, np.empty(0, np.int64))
    assert not moves(model, 0, np.array([2, 1]))  # seen in the model already
    assert not moves(model, 0, np.array([1, 12]))  # and an item beyond the table
    assert moves(model, 0, np.array([1, 5])) and moves(model, 1, np.array([1]))
