"""The scorer and the serving model, against brute force."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
from engine_testkit import random_payload

from engine import scorer
from engine.holder import ModelLoadError, ServingModel
from engine.scorer import extra_pairs, rank_popular, seen_pairs, top_k

N_USERS, N_ITEMS, DIM = 12, 50, 6


def _payload(seed: int = 0, **changes: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    seen = [sorted(rng.choice(N_ITEMS, size=rng.integers(0, 8), replace=False).tolist())
            for _ in range(N_USERS)]
    seen[3] = list(range(N_ITEMS))  # has seen everything
    payload = random_payload(N_USERS, N_ITEMS, DIM, seen, seed=seed, version=3, period_id=2,
                             popular=[4, 2, 9, 4])
    payload.update(changes)
    return payload


def _brute_force(payload: dict[str, Any], user: int, k: int, exclude: set[int]) -> list[int]:
    u, v = payload["user"].numpy(), payload["item"].numpy()
    scores = v[:, :-1] @ u[user, :-1] + v[:, -1]
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in exclude]
    return order[:k]


def _seen(payload: dict[str, Any], user: int) -> set[int]:
    indptr, items = payload["seen_indptr"].numpy(), payload["seen_items"].numpy()
    return set(items[indptr[user]: indptr[user + 1]].tolist())


def test_serving_model_layout() -> None:
    model = ServingModel.from_payload(_payload())
    assert (model.version, model.n_users, model.n_items) == (3, N_USERS, N_ITEMS)
    assert model.item_emb.is_contiguous() and model.user_emb.is_contiguous()
    assert model.item_emb.shape == (N_ITEMS, DIM) and model.item_bias.shape == (N_ITEMS,)
    assert model.user_index["u5"] == 5
    assert model.popular.tolist() == [4, 2, 9]  # repeats dropped


@pytest.mark.parametrize("max_cells", [1, 3 * N_ITEMS, 1 << 25])
@pytest.mark.parametrize("k", [1, 7, 50, 200])
def test_top_k_matches_brute_force(max_cells: int, k: int) -> None:
    payload = _payload(seed=k)
    model = ServingModel.from_payload(payload)
    users = [0, 5, 3, 11, 5]
    extra = [np.array([1, 2, 999]), None, None, np.array([], dtype=np.int64), np.array([7])]
    results = top_k(model, users, k, extra_seen=extra, max_cells=max_cells)
    for user, more, result in zip(users, extra, results, strict=True):
        exclude = _seen(payload, user) | ({int(i) for i in more} if more is not None else set())
        assert result.items.tolist() == _brute_force(payload, user, k, exclude)
        assert np.all(np.diff(result.scores) <= 0)
    assert len(results[2].items) == 0  # user 3 has seen every item


@pytest.mark.parametrize("tile_cells", [1, 60 * 64 * 5, 1 << 18])
@pytest.mark.parametrize("k", [1, 11])
def test_item_major_chunks_match_brute_force(
    monkeypatch: pytest.MonkeyPatch, tile_cells: int, k: int
) -> None:
    """Chunks of ``ITEM_MAJOR_MIN_USERS`` or more are scored item-major, tile by
    tile (one block per tile, several, one for everything), seen pairs masked in
    their own tile, the last chunk padded with zero users to whole lanes: the same
    answers as brute force, including users who have seen whole blocks or every
    item and a catalog that is not a whole number of blocks."""
    n_users, n_items = 150, 64 * 47 - 5
    rng = np.random.default_rng(k)
    seen = [sorted(rng.choice(n_items, size=rng.integers(0, 40), replace=False).tolist())
            for _ in range(n_users)]
    seen[7] = list(range(n_items))
    seen[8] = list(range(64, 64 * 30))  # blocks 1-29 whole
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seen])])
    payload = _payload(
        seed=k, user=torch.randn(n_users, DIM + 1), item=torch.randn(n_items, DIM + 1),
        user_ids=[f"u{n}" for n in range(n_users)], item_ids=[f"i{n}" for n in range(n_items)],
        seen_indptr=torch.tensor(indptr, dtype=torch.int64),
        seen_items=torch.tensor([i for s in seen for i in s], dtype=torch.int64))
    model = ServingModel.from_payload(payload, quantize=False)
    monkeypatch.setattr(scorer, "TILE_CELLS", tile_cells)
    calls: list[int] = []
    item_major = scorer._item_major_top_k
    monkeypatch.setattr(scorer, "_item_major_top_k",
                        lambda model, user_emb, *rest: calls.append(len(user_emb))
                        or item_major(model, user_emb, *rest))
    users = list(range(n_users))
    extra = [np.array([u % n_items, (u * 7) % n_items]) for u in users]
    cells = 70 * model.item_emb_padded.shape[0]  # chunks of 64 users: whole lanes
    results = top_k(model, users, k, extra_seen=extra, max_cells=cells)
    assert scorer.USER_LANES == 32 and scorer.ITEM_MAJOR_MIN_USERS <= 22
    assert calls == [64, 64, 22]  # the last chunk is scored as 32 users
    for user, more, result in zip(users, extra, results, strict=True):
        exclude = set(seen[user]) | {int(i) for i in more}
        assert result.items.tolist() == _brute_force(payload, user, k, exclude)
        assert np.all(np.diff(result.scores) <= 0)
    assert len(results[7].items) == 0


def test_top_k_without_exclusion_ranks_everything() -> None:
    payload = _payload()
    model = ServingModel.from_payload(payload)
    [result] = top_k(model, [3], 1000, exclude_seen=False)
    assert result.items.tolist() == _brute_force(payload, 3, 1000, set())
    assert top_k(model, [], 5) == []


def test_seen_pairs_and_extra_pairs() -> None:
    indptr = np.array([0, 2, 2, 5])
    items = np.array([4, 1, 0, 3, 2])
    rows, cols = seen_pairs(indptr, items, np.array([2, 1, 0, 2]))
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [
        (0, 0), (0, 3), (0, 2), (2, 4), (2, 1), (3, 0), (3, 3), (3, 2)]
    rows, cols = extra_pairs([np.array([1, 9]), None, np.array([-1, 2])], n_items=5)
    assert (rows.tolist(), cols.tolist()) == ([0, 2], [1, 2])
    # the table's first and last items are kept, the index past its end is not
    rows, cols = extra_pairs([np.array([5, 0]), np.array([4, -1])], n_items=5)
    assert (rows.tolist(), cols.tolist()) == ([0, 1], [0, 4])


def test_rank_popular() -> None:
    popular = np.array([7, 3, 9, 1])
    ranked = rank_popular(popular, 3)
    assert ranked.items.tolist() == [7, 3, 9]
    assert ranked.scores.tolist() == [4.0, 3.0, 2.0]
    # the types of every TopK (a model's answers and the fallback share a batch)
    assert (ranked.items.dtype.name, ranked.scores.dtype.name) == ("int64", "float32")
    ranked = rank_popular(popular, 3, exclude=np.array([3, 100]))
    assert (ranked.items.tolist(), ranked.scores.tolist()) == ([7, 9, 1], [4.0, 2.0, 1.0])


BROKEN = {
    "wrong format": {"format": "something-else/2"},
    "dims differ": {"item": torch.randn(N_ITEMS, DIM)},
    "ids too few": {"user_ids": ["u0"]},
    "non-finite": {"item": torch.full((N_ITEMS, DIM + 1), float("nan"))},
    "csr too short": {"seen_indptr": torch.zeros(3, dtype=torch.int64)},
    "seen item unknown": {"seen_items": torch.full((1,), N_ITEMS, dtype=torch.int64),
                          "seen_indptr": torch.tensor([0] + [1] * N_USERS)},
    "popular unknown": {"popular": torch.tensor([N_ITEMS])},
    "not a tensor": {"user": [[1.0]]},
}


@pytest.mark.parametrize("changes", BROKEN.values(), ids=BROKEN.keys())
def test_inconsistent_artifacts_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError):
        ServingModel.from_payload(_payload(**changes))


def test_missing_key_is_refused() -> None:
    payload = _payload()
    del payload["popular"]
    with pytest.raises(ModelLoadError):
        ServingModel.from_payload(payload)


def test_both_artifact_formats_give_the_same_model() -> None:
    from store import pack_ids

    old = _payload()
    new = _payload(format="smlrec-model/2", user_ids=pack_ids(old["user_ids"]),
                   item_ids=pack_ids(old["item_ids"]))
    a, b = ServingModel.from_payload(old), ServingModel.from_payload(new)
    assert (a.user_ids, a.item_ids, a.item_prefix) == (b.user_ids, b.item_ids, b.item_prefix)
    assert a.user_index == b.user_index and a.item_index == b.item_index
    assert [r.items.tolist() for r in top_k(a, [0, 4], 5)] == [
        r.items.tolist() for r in top_k(b, [0, 4], 5)]
    with pytest.raises(ModelLoadError):
        ServingModel.from_payload(_payload(format="smlrec-model/3"))


def test_a_new_version_shares_or_extends_the_id_maps_of_the_previous() -> None:
    previous = ServingModel.from_payload(_payload())
    same = ServingModel.from_payload(_payload(seed=1), previous=previous)
    assert same.user_index is previous.user_index and same.item_index is previous.item_index
    assert same.item_prefix is previous.item_prefix

    indptr = _payload(seed=2)["seen_indptr"]  # two more users, who have seen nothing
    grown = _payload(seed=2, user=torch.randn(N_USERS + 2, DIM + 1),
                     item=torch.randn(N_ITEMS + 1, DIM + 1),
                     user_ids=[f"u{n}" for n in range(N_USERS + 2)],
                     item_ids=[f"i{n}" for n in range(N_ITEMS)] + ['new "item"'],
                     seen_indptr=torch.cat([indptr, indptr[-1:].repeat(2)]))
    extended = ServingModel.from_payload(grown, previous=previous)
    fresh = ServingModel.from_payload(grown)
    assert extended.user_index == fresh.user_index and extended.item_index == fresh.item_index
    assert extended.item_prefix == fresh.item_prefix and extended.item_ids == fresh.item_ids
    assert extended.user_index is not previous.user_index  # a copy: the previous one is intact
    assert len(previous.user_index) == N_USERS and "new \"item\"" not in previous.item_index

    renamed = _payload(seed=3, user_ids=[f"v{n}" for n in range(N_USERS)])
    other = ServingModel.from_payload(renamed, previous=previous)
    assert other.user_index == {f"v{n}": n for n in range(N_USERS)}


@pytest.mark.parametrize("n_items", [0, 1])
def test_a_catalog_of_no_item_or_one_item(n_items: int) -> None:
    """No item: every user gets an empty answer, typed as a scored one (int64 items,
    float32 scores). One item: it is everyone's answer unless seen."""
    seen: list[list[int]] = [[], [0] if n_items else [], []]
    payload = random_payload(3, n_items, DIM, seen, popular=[])
    model = ServingModel.from_payload(payload)
    results = top_k(model, [0, 1, 2], 5)
    assert len(results) == 3
    for user, result in enumerate(results):
        assert result.items.dtype == np.int64 and result.scores.dtype == np.float32
        assert result.items.shape == result.scores.shape
        assert result.items.tolist() == _brute_force(payload, user, 5, set(seen[user]))
    assert [len(r.items) for r in results] == ([0, 0, 0] if n_items == 0 else [1, 0, 1])


def test_each_scoring_thread_keeps_one_buffer_it_grows_and_reuses() -> None:
    """The score matrix goes into a buffer of the scoring thread's own: a thread that
    never scored gets one, later calls reuse it (no allocation per request) and it
    grows only when a call needs more; another thread never shares it. A new thread
    answers as brute force does, from its first call on."""
    payload = _payload()
    model = ServingModel.from_payload(payload)
    seen_by: dict[str, list[int]] = {}
    answers: dict[str, list[list[int]]] = {}

    def work(name: str) -> None:
        answers[name] = [r.items.tolist() for r in top_k(model, [0, 5], 7)]
        first = scorer._score_buffer(100)
        again = scorer._score_buffer(100)
        smaller = scorer._score_buffer(10)
        larger = scorer._score_buffer(first.numel() + 1)
        after = scorer._score_buffer(first.numel())
        exact_fit = scorer._score_buffer(larger.numel())
        assert first.dtype == torch.float32 and first.numel() >= 100
        assert again.data_ptr() == first.data_ptr() == smaller.data_ptr()
        assert larger.numel() >= first.numel() + 1 and larger.data_ptr() != first.data_ptr()
        assert after.data_ptr() == larger.data_ptr() == exact_fit.data_ptr()
        seen_by[name] = [first.data_ptr(), larger.data_ptr()]

    for name in ("a", "b"):
        thread = threading.Thread(target=work, args=(name,))
        thread.start()
        thread.join()
    assert set(seen_by) == {"a", "b"}  # each thread ran every assertion
    for name in ("a", "b"):
        assert answers[name] == [_brute_force(payload, u, 7, _seen(payload, u)) for u in (0, 5)]
    holder: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: holder.append(scorer._score_buffer(100)))
    thread.start()
    thread.join()
    assert holder[0].data_ptr() != scorer._score_buffer(100).data_ptr()


def test_a_fresh_thread_scores_item_major_chunks_in_its_own_buffer() -> None:
    """The item-major path (many users, many blocks) takes its buffer the same way."""
    n_users, n_items = 40, 64 * 20
    payload = random_payload(n_users, n_items, DIM, [[u] for u in range(n_users)])
    model = ServingModel.from_payload(payload, quantize=False)
    out: list[list[int]] = []
    thread = threading.Thread(target=lambda: out.extend(
        r.items.tolist() for r in top_k(model, list(range(n_users)), 3)))
    thread.start()
    thread.join()
    assert out == [_brute_force(payload, u, 3, {u}) for u in range(n_users)]


def test_item_major_scoring_starts_at_exactly_its_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ITEM_MAJOR_MIN_USERS`` users and 4k blocks are scored item-major; one user
    fewer or one k more are not (the answers are brute force's either way)."""
    n_users, n_items, k = 20, 64 * 20, 5  # 20 blocks = 4k
    payload = random_payload(n_users, n_items, DIM, [[u] for u in range(n_users)])
    model = ServingModel.from_payload(payload, quantize=False)
    calls: list[int] = []
    item_major = scorer._item_major_top_k
    monkeypatch.setattr(scorer, "_item_major_top_k",
                        lambda model, user_emb, *rest: calls.append(len(user_emb))
                        or item_major(model, user_emb, *rest))
    least = scorer.ITEM_MAJOR_MIN_USERS
    for users, kk in ((least, k), (least - 1, k), (least, k + 1)):
        results = top_k(model, list(range(users)), kk)
        assert [r.items.tolist() for r in results] == [
            _brute_force(payload, u, kk, {u}) for u in range(users)]
    assert calls == [least]
