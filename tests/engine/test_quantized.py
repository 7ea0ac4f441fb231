"""The int8 candidate pass gives the float32 top k: its error bound holds, and
its answers equal the float32 scorer's on catalogs of many shapes."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from engine import scorer
from engine.holder import SCORE_BLOCK, ServingModel
from engine.quantized import INT8_MAX_K, MIN_ITEMS, QuantizedItems
from engine.scorer import top_k


@pytest.fixture(autouse=True)
def _int8_for_any_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving keeps small batches on float32; these tests check int8 on any size."""
    monkeypatch.setattr(scorer, "QUANTIZED_MIN_USERS", 1)


def _payload(n_users: int, n_items: int, dim: int, seed: int, *, bias_scale: float = 0.3,
             emb_scale: float = 0.3, seen_per_user: int = 5) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, seen_per_user + 1, n_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    generator = torch.Generator().manual_seed(seed)
    item = torch.randn(n_items, dim + 1, generator=generator) * emb_scale
    item[:, -1] = torch.randn(n_items, generator=generator) * bias_scale
    return {
        "format": "smlrec-model/1", "version": 1, "period_id": 1, "strategy": "sml",
        "created_at": 0.0,
        "user": torch.randn(n_users, dim + 1, generator=generator) * emb_scale,
        "item": item,
        "user_ids": [f"u{n}" for n in range(n_users)],
        "item_ids": [f"i{n}" for n in range(n_items)],
        "seen_indptr": torch.from_numpy(indptr),
        "seen_items": torch.from_numpy(rng.integers(0, n_items, indptr[-1])),
        "popular": torch.arange(min(10, n_items)),
    }


def _pair(payload: dict[str, Any]) -> tuple[ServingModel, ServingModel]:
    """The same model with int8 tables (whatever its size) and without."""
    model = ServingModel.from_payload(payload)
    quantized = QuantizedItems.build(model.item_emb_padded, model.item_bias_padded,
                                     model.n_items, SCORE_BLOCK)
    return (dataclasses.replace(model, quantized=quantized),
            dataclasses.replace(model, quantized=None))


def _assert_same(with_int8: ServingModel, exact: ServingModel, users: list[int], k: int,
                 extra: list[np.ndarray | None] | None = None) -> None:
    fast = top_k(with_int8, users, k, extra_seen=extra)
    slow = top_k(exact, users, k, extra_seen=extra)
    for a, b in zip(fast, slow, strict=True):
        assert len(a.items) == len(b.items)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
        # the same items, up to the order of scores equal to float32 rounding
        assert set(a.items.tolist()) == set(b.items.tolist())


def test_error_bound_holds_for_every_item() -> None:
    """|s - a| <= |x| E_b + |x - sx qx| N_b for every (user, item): the
    inequality the search stands on, checked against float64 scores."""
    payload = _payload(64, 3000, 24, seed=1, bias_scale=2.0)
    model, _ = _pair(payload)
    quantized = model.quantized
    assert quantized is not None
    codes_t, unit, x_norm, x_err = quantized.quantize_users(model.user_emb)
    approx = (quantized.codes.double() @ codes_t.double()).T * unit.double()[:, None]
    user, item = payload["user"].double(), payload["item"].double()
    exact = user[:, :-1] @ item[:, :-1].T + item[:, -1]  # (U, I)
    block = torch.arange(model.n_items) // SCORE_BLOCK
    bound = (x_norm.double()[:, None] * quantized.block_err.double()[block]
             + x_err.double()[:, None] * quantized.block_norm.double()[block])
    gap = (exact - approx[:, : model.n_items]).abs()
    assert bool((gap <= bound).all())
    assert float((gap / bound).max()) > 0.05  # the bound is not vacuous either


@pytest.mark.parametrize(("n_items", "dim", "k"), [
    (1000, 8, 20),  # padding: 1000 is not a multiple of the block
    (1037, 3, 1),
    (2048, 64, 100),
    (4100, 17, 7),
])
def test_top_k_equals_float32(n_items: int, dim: int, k: int) -> None:
    with_int8, exact = _pair(_payload(300, n_items, dim, seed=n_items))
    users = [*range(300), 5, 5]  # repeats too
    extra: list[np.ndarray | None] = [
        np.array([u % n_items, (u * 7) % n_items]) if u % 3 == 0 else None for u in users]
    _assert_same(with_int8, exact, users, k, extra)
    _assert_same(with_int8, exact, users[:1], k)


@pytest.mark.parametrize("scales", [
    {"bias_scale": 30.0, "emb_scale": 0.05},  # biases dominate
    {"bias_scale": 0.0},  # no biases at all
    {"emb_scale": 1e-6},  # nearly zero embeddings: ranked by bias
])
def test_top_k_equals_float32_at_other_scales(scales: dict[str, float]) -> None:
    with_int8, exact = _pair(_payload(50, 3000, 16, seed=7, **scales))
    _assert_same(with_int8, exact, list(range(50)), 20)


def test_ties_give_equal_scores() -> None:
    """Items repeated many times tie exactly; any of them may be returned, but
    the scores are the float32 scorer's."""
    payload = _payload(20, 1280, 8, seed=3)
    payload["item"] = payload["item"][:10].repeat(128, 1)
    with_int8, exact = _pair(payload)
    for a, b in zip(top_k(with_int8, list(range(20)), 30), top_k(exact, list(range(20)), 30),
                    strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)


def test_users_who_have_seen_most_blocks_fall_back_to_float32() -> None:
    """With fewer than k clean blocks the int8 pass cannot bound the k-th score;
    such users are scored in float32 inside the same call."""
    n_items = 640  # 10 blocks
    payload = _payload(6, n_items, 8, seed=4, seen_per_user=0)
    heavy = np.arange(0, n_items, 3)  # one seen item in every block
    indptr = [0, len(heavy), len(heavy), len(heavy), 2 * len(heavy), 2 * len(heavy),
              2 * len(heavy)]
    payload["seen_indptr"] = torch.tensor(indptr)
    payload["seen_items"] = torch.from_numpy(np.concatenate([heavy, heavy]))
    with_int8, exact = _pair(payload)
    assert with_int8.quantized is not None
    _, _, answered = with_int8.quantized.search(
        with_int8.user_emb, 5, with_int8.item_emb_padded, with_int8.item_bias_padded,
        np.repeat(np.array([0, 3]), len(heavy)), np.concatenate([heavy, heavy]))
    assert answered.tolist() == [False, True, True, False, True, True]
    _assert_same(with_int8, exact, list(range(6)), 5)
    [result] = top_k(with_int8, [0], 5)
    assert not set(result.items.tolist()) & set(heavy.tolist())


def test_large_catalogs_get_int8_tables_small_ones_do_not() -> None:
    small = ServingModel.from_payload(_payload(4, MIN_ITEMS - 1, 4, seed=5))
    large = ServingModel.from_payload(_payload(4, MIN_ITEMS, 4, seed=5))
    assert small.quantized is None
    assert large.quantized is not None and large.quantized.codes.dtype == torch.int8
    _assert_same(large, dataclasses.replace(large, quantized=None), [0, 1, 2, 3], 10)


def test_k_beyond_the_int8_range_uses_float32() -> None:
    with_int8, exact = _pair(_payload(5, 1500, 8, seed=6))
    _assert_same(with_int8, exact, list(range(5)), 500)
    _assert_same(with_int8, exact, list(range(5)), 1500)  # everything unseen


def _searches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch sizes the int8 pass is asked for from now on."""
    calls: list[int] = []
    search = QuantizedItems.search

    def counting(self: QuantizedItems, user_emb: torch.Tensor, *args: Any) -> Any:
        calls.append(len(user_emb))
        return search(self, user_emb, *args)

    monkeypatch.setattr(QuantizedItems, "search", counting)
    return calls


def test_small_batches_stay_on_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scorer, "QUANTIZED_MIN_USERS", 64)
    with_int8, _ = _pair(_payload(100, 1000, 8, seed=8))
    calls = _searches(monkeypatch)
    top_k(with_int8, list(range(63)), 10)
    assert calls == []
    top_k(with_int8, list(range(100)), 10)
    assert calls == [100]


def test_users_not_answered_get_no_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user left to float32 costs the int8 pass nothing beyond pass 1."""
    n_items = 640
    payload = _payload(2, n_items, 8, seed=9, seen_per_user=0)
    with_int8, _ = _pair(payload)
    assert with_int8.quantized is not None
    sizes: list[int] = []
    rescore = QuantizedItems._rescore

    def spy(self: QuantizedItems, user_emb: torch.Tensor, k: int, *args: Any) -> Any:
        rows = args[2]
        sizes.append(int((rows == 0).sum()))
        return rescore(self, user_emb, k, *args)

    monkeypatch.setattr(QuantizedItems, "_rescore", spy)
    every_block = np.arange(0, n_items, SCORE_BLOCK)  # user 0 has seen one item per block
    with_int8.quantized.search(with_int8.user_emb, 3, with_int8.item_emb_padded,
                               with_int8.item_bias_padded, np.zeros(len(every_block), np.int64),
                               every_block)
    assert sizes == [0]


def test_int8_tables_can_be_turned_off() -> None:
    """``SMLREC_INT8_SCORING=false`` reaches the model through ``quantize``."""
    payload = _payload(4, MIN_ITEMS, 4, seed=10)
    assert ServingModel.from_payload(payload, quantize=False).quantized is None
    assert ServingModel.from_payload(payload).quantized is not None


def test_the_int8_pass_starts_at_exactly_its_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``QUANTIZED_MIN_USERS`` users or more and k up to ``INT8_MAX_K`` go through int8;
    one user fewer or k one more do not."""
    monkeypatch.setattr(scorer, "QUANTIZED_MIN_USERS", 64)
    with_int8, exact = _pair(_payload(100, 1000, 8, seed=8))
    calls = _searches(monkeypatch)
    top_k(with_int8, list(range(64)), 10)
    top_k(with_int8, list(range(63)), 10)
    assert calls == [64]
    calls.clear()
    users = list(range(64))
    pairs = zip(top_k(with_int8, users, INT8_MAX_K), top_k(exact, users, INT8_MAX_K), strict=True)
    for a, b in pairs:
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
    top_k(with_int8, users, INT8_MAX_K + 1)
    assert calls == [64]


def test_a_fallback_user_keeps_only_its_own_exclusions() -> None:
    """Users the int8 pass cannot answer are rescored in float32 with their own seen
    items, renumbered among themselves: the answered users' seen items must not
    leak into them (here user 1's seen item is what user 3 would rank first)."""
    n_items = 640  # 10 blocks
    payload = _payload(5, n_items, 8, seed=4, seen_per_user=0)
    heavy = np.arange(0, n_items, 3)  # one seen item in every block: no clean block left
    model = ServingModel.from_payload(payload, quantize=False)
    [alone] = top_k(model, [3], 1, extra_seen=[heavy])
    favourite = int(alone.items[0])
    seen = [heavy, np.array([favourite]), np.array([], np.int64), heavy, np.array([7])]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seen])])
    payload["seen_indptr"] = torch.from_numpy(indptr)
    payload["seen_items"] = torch.from_numpy(np.concatenate(seen).astype(np.int64))
    with_int8, exact = _pair(payload)
    results = top_k(with_int8, list(range(5)), 5)
    assert int(results[3].items[0]) == favourite
    assert favourite not in results[1].items.tolist()
    _assert_same(with_int8, exact, list(range(5)), 5)


def test_the_search_is_chosen_by_the_models_codes_the_batch_and_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """:func:`scorer.search_for`: int8 (chunks of ``QUANTIZED_CHUNK``) only where the
    model has codes, enough users are asked and k is small enough; float32 otherwise,
    in chunks that ``max_cells`` bounds."""
    monkeypatch.setattr(scorer, "QUANTIZED_MIN_USERS", 64)
    with_int8, exact = _pair(_payload(100, 1000, 8, seed=8))
    chosen = scorer.search_for(with_int8, 64, 10)
    assert isinstance(chosen, scorer.Int8Search) and chosen.chunk == scorer.QUANTIZED_CHUNK
    assert chosen.quantized is with_int8.quantized
    for model, n_users, k in ((exact, 64, 10), (with_int8, 63, 10),
                              (with_int8, 64, INT8_MAX_K + 1)):
        plain = scorer.search_for(model, n_users, k, max_cells=40 * 1024)
        assert isinstance(plain, scorer.Float32Search)
        assert plain.chunk == 32  # 40 users' cells at 1,024 padded items, in whole lanes
