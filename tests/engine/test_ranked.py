"""Precomputed top lists (engine.ranked, engine.ranker) against the scorer they
stand in for; which users get a list, and when."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from engine_testkit import random_payload

import engine.ranker
from engine.holder import ServingModel
from engine.ranked import Rankings, list_may_answer
from engine.ranker import Ranker
from engine.scorer import TopK, top_k

N_USERS, N_ITEMS, DIM = 130, 700, 6


def _model(version: int = 1, seed: int = 0) -> ServingModel:
    """A random model whose users have seen 0-30 items each; user 5 all but 4."""
    rng = np.random.default_rng(seed)
    seen = [sorted(rng.choice(N_ITEMS, size=rng.integers(0, 30), replace=False).tolist())
            for _ in range(N_USERS)]
    seen[5] = list(range(4, N_ITEMS))
    return ServingModel.from_payload(
        random_payload(N_USERS, N_ITEMS, DIM, seen, seed=seed, version=version), quantize=False)


def _rank(ranker: Ranker, model: ServingModel) -> Rankings:
    """Submit ``model`` and wait until every user is ranked."""
    ranker.submit(model)
    return _ranked(ranker, model)


def _ranked(ranker: Ranker, model: ServingModel) -> Rankings:
    """``model``'s lists once every user is ranked."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rankings = ranker.rankings(model)
        if rankings is not None and rankings.filled == min(model.n_users, ranker.capacity):
            return rankings
        time.sleep(0.01)
    raise AssertionError(f"version {model.version} was not ranked in time")


@pytest.fixture
def ranker() -> Iterator[Ranker]:
    started = Ranker(depth=20, chunk=32)
    started.start()
    yield started
    started.stop()


def test_lists_answer_what_scoring_answers(ranker: Ranker) -> None:
    """Every user, k up to the depth, with and without items logged since the
    model: the same items and scores as scoring, or None where the list is too
    short to tell once those items are dropped. (Scores agree to float rounding:
    products of different batch sizes round differently, and a request's batch
    size varies anyway.)"""
    model = _model()
    rankings = _rank(ranker, model)
    rng = np.random.default_rng(1)
    extras: list[np.ndarray | None] = []
    for user in range(N_USERS):  # some of each user's best items, a few others
        best = top_k(model, [user], 20)[0].items
        extras.append(np.concatenate([
            rng.choice(best, size=min(len(best), int(rng.integers(0, 12))), replace=False),
            rng.integers(0, N_ITEMS, size=int(rng.integers(0, 3)))]))
    answered = declined = 0
    for k in (1, 7, 20):
        for more in ([None] * N_USERS, extras):
            for user, got in enumerate(rankings.lookup(range(N_USERS), k, more)):
                expected = top_k(model, [user], k, extra_seen=[more[user]])[0]
                if got is None:  # only a full list that loses too many of its items
                    declined += 1
                    slot = rankings.slot_of[user]
                    listed = rankings.items[slot, : rankings.lengths[slot]]
                    assert rankings.lengths[slot] == 20
                    assert len(np.setdiff1d(listed, more[user])) < k
                    continue
                answered += 1
                assert got.items == expected.items.tolist()
                assert got.scores == pytest.approx(expected.scores.tolist(), rel=1e-6)
    assert answered and declined
    # user 5 has 4 unseen items: its short list is its whole answer, for any k
    assert rankings.lengths[rankings.slot_of[5]] == 4
    short = top_k(model, [5], 20)[0].items.tolist()
    assert rankings.lookup([5], 20, [None]) == [
        (short, rankings.scores[rankings.slot_of[5], :4].tolist())]
    assert rankings.lookup([5], 20, [np.array([short[1]])])[0].items == short[:1] + short[2:]
    assert rankings.lookup([0], 21, [None]) == [None]  # beyond the depth


def test_users_without_a_list_are_not_answered() -> None:
    model = _model()
    rankings = Rankings(model, 10)
    users = np.arange(40, 80)
    assert rankings.fill(users, top_k(model, users, 10)) == 40
    assert rankings.filled == 40 and rankings.slot_of[40] == 0 and rankings.slot_of[39] == -1
    assert rankings.lookup([79, 39, 40], 1, [None, None, np.array([7])])[1] is None
    assert rankings.lookup([79], 10, [None])[0] is not None
    assert rankings.missing([3, 40, 79, 80]).tolist() == [3, 80]
    assert rankings.unranked(np.array([80, 3, 40, 80, -1, N_USERS])).tolist() == [80, 3]


def test_a_list_published_while_a_lookup_reads_is_not_answered() -> None:
    """The ranking thread may fill slots between a lookup's reads: a lookup goes
    by the slots published when it began (else it would take unfilled rows for
    empty lists: seen as empty answers under concurrent swaps)."""
    model = _model()
    rankings = Rankings(model, 10)
    users = np.arange(40)
    tops = top_k(model, users, 10)

    class FilledRightAfterRead(np.ndarray):
        def __getitem__(self, key: object) -> object:
            rows = super().__getitem__(key)  # as they are before the fill
            if rankings.filled == 0:
                rankings.fill(users, tops)
            return rows

    rankings.lengths = rankings.lengths.view(FilledRightAfterRead)
    assert rankings.lookup([3], 5, [None]) == [None]
    assert rankings.filled == 40 and rankings.lookup([3], 5, [None])[0] is not None


def test_a_slot_no_request_looked_up_goes_to_a_user_who_asks() -> None:
    """With every slot taken, a user's list replaces one that no request looked up;
    a lookup that read that slot while it was rewritten answers nothing rather than
    the other user's list."""
    model = _model()
    rankings = Rankings(model, 10, capacity=10)
    assert rankings.fill(np.arange(10), top_k(model, np.arange(10), 10)) == 10
    assert rankings.lookup([3], 5, [None])[0] is not None  # user 3's slot is used
    assert rankings.reusable() == 9
    assert rankings.fill([50], top_k(model, [50], 10)) == 1
    gone = [u for u in range(10) if rankings.slot_of[u] < 0]
    assert len(gone) == 1 and gone != [3] and rankings.filled == 10
    listed = rankings.lookup([50, gone[0]], 10, [None, None])
    assert listed[1] is None
    expected = top_k(model, [50], 10)[0]
    assert listed[0] is not None and listed[0].items == expected.items.tolist()

    victim = next(u for u in range(10) if u not in (3, 50) and rankings.slot_of[u] >= 0)
    rankings.lookup([u for u in range(10) if u not in (victim,) and rankings.slot_of[u] >= 0],
                    5, [None] * 8)  # every slot but the victim's is used now
    tops = top_k(model, [60], 10)

    class RewrittenRightAfterRead(np.ndarray):
        def __getitem__(self, key: object) -> object:
            rows = super().__getitem__(key)  # the victim's, as they were
            if rankings.slot_of[60] < 0:
                assert rankings.fill([60], tops) == 1  # takes the victim's slot
            return rows

    rankings.lengths = rankings.lengths.view(RewrittenRightAfterRead)
    assert rankings.lookup([victim], 5, [None]) == [None]
    assert rankings.slot_of[victim] == -1 and rankings.lookup([60], 5, [None])[0] is not None


def test_a_filter_too_small_to_fill_k_of_a_list_does_not_read_it() -> None:
    """A list answers a filtered request when k of its depth items pass; a filter's
    members fill depth * members / n_items of a list on average, so below k the lists
    are not read (the request is scored), but the user still counts as active, and a
    user with no list is still ranked next."""
    assert list_may_answer(50, 20, 40_000, 100_000)  # 20 expected: read
    assert not list_may_answer(50, 20, 39_999, 100_000)
    assert list_may_answer(5, 5, N_ITEMS, N_ITEMS)  # no filter narrower than the catalogue
    model = _model()
    ranker = Ranker(depth=10, capacity=N_USERS - 1, chunk=16)
    ranker.start()
    try:
        rankings = _rank(ranker, model)
        unlisted = int(np.flatnonzero(rankings.slot_of < 0)[0])
        everything = lambda items: np.ones(items.shape, dtype=bool)  # noqa: E731
        half = N_ITEMS // 2
        read = ranker.lookup(model, [1, 2], 5, [None, None], everything, members=half)
        assert read[0] is not None and read[0].items == top_k(model, [1], 5)[0].items.tolist()
        assert sorted(rankings.active().tolist()) == [1, 2]
        # 10 * 349 < 5 * 700: not read, though these lists would answer, and marked used
        small = ranker.lookup(model, [3, unlisted], 5, [None, None], everything,
                              members=half - 1)
        assert small == [None, None]
        assert sorted(rankings.active().tolist()) == [1, 2, 3]
        deadline = time.monotonic() + 60
        while rankings.slot_of[unlisted] < 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rankings.slot_of[unlisted] >= 0  # asked: ranked next, in a reused slot
    finally:
        ranker.stop()


def test_lists_are_bounded_and_asked_for_users_take_the_free_slots() -> None:
    """At most ``capacity`` users get a list, the newest first; a user whose request
    finds none is scored (None) and ranked next, into a free slot or, once none is
    left, into the slot of a user no request looked up; the users who asked, with
    a list or without, are ranked first for the next version."""
    model = _model()
    ranker = Ranker(depth=5, capacity=30, chunk=8)
    ranker.start()
    try:
        rankings = _rank(ranker, model)
        assert rankings.capacity == 30 and len(rankings.slot_of) == N_USERS
        assert sorted(rankings.user_of.tolist()) == list(range(N_USERS - 30, N_USERS))
        assert rankings.active().size == 0
        answers = ranker.lookup(model, [0, N_USERS - 1], 5, [None, None])
        assert answers[0] is None and answers[1] is not None  # user 0: no list
        assert rankings.active().tolist() == [N_USERS - 1]
        # no slot is free: user 0 takes one no request looked up, never user N - 1's
        deadline = time.monotonic() + 60
        while rankings.slot_of[0] < 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rankings.slot_of[0] >= 0 and rankings.slot_of[N_USERS - 1] >= 0
        assert rankings.filled == 30 and int((rankings.slot_of >= 0).sum()) == 30
        assert ranker.lookup(model, [0], 5, [None])[0] is not None
        # both asked: the next version ranks them first, user 0 past the capacity too
        second = _model(2, seed=2)
        assert ranker.stage(second, wait_s=60)
        ranker.submit(second)
        following = ranker.rankings(second)
        assert following is not None
        assert sorted(following.user_of[:2].tolist()) == [0, N_USERS - 1]
    finally:
        ranker.stop()
    small = Ranker(depth=5, capacity=N_USERS, chunk=8)
    paused, resume = threading.Event(), threading.Event()
    score = engine.ranker.top_k
    calls: list[list[int]] = []

    def scoring(m: ServingModel, users: np.ndarray, k: int) -> list[TopK]:
        calls.append(np.asarray(users).tolist())
        if len(calls) == 1:
            paused.set()
            resume.wait(60)
        return score(m, users, k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.ranker, "top_k", scoring)
        small.start()
        try:
            small.submit(model)
            assert paused.wait(60)  # the first chunk: the newest users
            assert small.lookup(model, [2, 0, 2], 5, [None] * 3) == [None] * 3
            resume.set()
            _ranked(small, model)
        finally:
            resume.set()
            small.stop()
    assert calls[0] == list(range(N_USERS - 1, N_USERS - 9, -1))
    assert calls[1][:2] == [2, 0]  # asked for: ranked before the rest of the order
    assert sorted(u for chunk in calls for u in chunk) == list(range(N_USERS))


def test_the_active_users_are_ranked_before_a_staged_version_serves() -> None:
    """Staging ranks the users whose lists answered requests under the served
    version into the new version's lists, while the served version's lists keep
    answering; the swap (submit) keeps those lists and ranks the rest."""
    first, second = _model(1, seed=1), _model(2, seed=2)
    ranker = Ranker(depth=5, chunk=4)
    ranker.start()
    try:
        _rank(ranker, first)
        assert ranker.lookup(first, [7, 60, 7], 5, [None] * 3)[0] is not None
        ranker.lookup(first, [60, 3], 50, [None] * 2)  # beyond the depth: not answered
        assert ranker.stage(second, wait_s=60)
        assert ranker.rankings(second) is None  # not served yet
        assert ranker.lookup(first, [3], 5, [None])[0] is not None  # the served lists answer
        ranker.submit(second)
        rankings = ranker.rankings(second)
        assert rankings is not None and sorted(rankings.user_of[:2].tolist()) == [7, 60]
        assert ranker.rankings(first) is None
        _ranked(ranker, second)
        assert rankings.lookup([7], 5, [None])[0].items == \
            top_k(second, [7], 5)[0].items.tolist()
    finally:
        ranker.stop()


def test_a_stage_gives_up_after_its_time_or_when_another_version_comes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, third = _model(1, seed=1), _model(2, seed=2), _model(3, seed=3)
    blocked, release = threading.Event(), threading.Event()
    score = engine.ranker.top_k

    def scoring(model: ServingModel, users: np.ndarray, k: int) -> list[TopK]:
        if model is not first:
            blocked.set()
            release.wait(60)
        return score(model, users, k)

    monkeypatch.setattr(engine.ranker, "top_k", scoring)
    ranker = Ranker(depth=5, chunk=4)
    ranker.start()
    try:
        _rank(ranker, first)
        ranker.lookup(first, [9], 5, [None])
        began = time.monotonic()
        assert not ranker.stage(second, wait_s=0.3)  # the thread is held up
        assert 0.3 <= time.monotonic() - began < 30
        outcome: list[bool] = []
        staging = threading.Thread(target=lambda: outcome.append(ranker.stage(second, 60)))
        staging.start()
        assert blocked.wait(60)
        ranker.submit(third)  # an activation meanwhile: the stage is dropped
        staging.join(60)
        assert outcome == [False]
        release.set()
        _ranked(ranker, third)
    finally:
        release.set()
        ranker.stop()


def test_a_newer_version_replaces_the_lists_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitting a version drops the earlier lists before the thread gets to it,
    a ranking in progress stops at its next chunk, and progress is reported for
    the version served only."""
    first, second = _model(1, seed=1), _model(2, seed=2)
    paused, resume = threading.Event(), threading.Event()
    progress: list[int] = []
    score = engine.ranker.top_k
    calls = 0

    def scoring(model: ServingModel, users: np.ndarray, k: int) -> list[TopK]:
        nonlocal calls
        calls += model is first
        if model is first and calls == 2:  # the first version's second chunk
            paused.set()
            resume.wait(60)
        return score(model, users, k)

    monkeypatch.setattr(engine.ranker, "top_k", scoring)
    ranker = Ranker(depth=5, chunk=10, on_progress=progress.append)
    ranker.start()
    try:
        ranker.submit(first)
        assert paused.wait(60)  # ranking the first version's second chunk
        assert ranker.rankings(first) is not None and ranker.rankings(first).filled == 10
        ranker.submit(second)
        assert ranker.rankings(first) is None
        assert ranker.rankings(second) is not None and ranker.rankings(second).filled == 0
        resume.set()
        rankings = _ranked(ranker, second)
        assert ranker.rankings(first) is None
        assert rankings.items[rankings.slot_of[N_USERS - 1], :5].tolist() == \
            score(second, [N_USERS - 1], 5)[0].items.tolist()
        # submit, first chunk, submit, then the second version from its start: the
        # first version's second chunk was ranked but not reported, and no more
        assert progress == [0, 10, 0, *range(10, N_USERS, 10), N_USERS]
        assert calls == 2
    finally:
        resume.set()
        ranker.stop()
    assert ranker.rankings(second) is None  # stopped: nothing kept


def test_ranking_runs_on_one_torch_thread_and_leaves_the_callers_count() -> None:
    counts: set[tuple[str, int]] = set()

    def report(ready: int) -> None:
        if ready:  # reported by the ranking thread
            counts.add((threading.current_thread().name, torch.get_num_threads()))

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    ranker = Ranker(depth=3, on_progress=report)
    try:
        ranker.start()
        assert torch.get_num_threads() == 2
        _rank(ranker, _model())
        assert counts == {("smlrec-ranker", 1)}
    finally:
        ranker.stop()
        torch.set_num_threads(previous)
