"""Precomputed top lists (engine.ranked) against the scorer they stand in for."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from engine_testkit import random_payload

import engine.ranked
from engine.holder import ServingModel
from engine.ranked import Ranker, Rankings
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
        if rankings is not None and rankings.ready == model.n_users:
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
                    listed = rankings.items[user, : rankings.lengths[user]]
                    assert rankings.lengths[user] == 20
                    assert len(np.setdiff1d(listed, more[user])) < k
                    continue
                answered += 1
                assert got.items == expected.items.tolist()
                assert got.scores == pytest.approx(expected.scores.tolist(), rel=1e-6)
    assert answered and declined
    # user 5 has 4 unseen items: its short list is its whole answer, for any k
    assert rankings.lengths[5] == 4
    short = top_k(model, [5], 20)[0].items.tolist()
    assert rankings.lookup([5], 20, [None]) == [(short, rankings.scores[5, :4].tolist())]
    assert rankings.lookup([5], 20, [np.array([short[1]])])[0].items == short[:1] + short[2:]
    assert rankings.lookup([0], 21, [None]) == [None]  # beyond the depth


def test_rows_not_ranked_yet_are_not_answered() -> None:
    model = _model()
    rankings = Rankings(model, 10)
    rankings.fill(0, top_k(model, range(40), 10))
    assert rankings.ready == 40
    assert rankings.lookup([39, 40, 0], 1, [None, None, np.array([7])])[1] is None
    assert rankings.lookup([39], 10, [None])[0] is not None


def test_rows_filled_while_a_lookup_reads_them_are_not_answered() -> None:
    """The ranking thread may fill rows between a lookup's reads: a lookup goes
    by the rows ready when it began (else it would take unfilled rows for empty
    lists: seen as empty answers under concurrent swaps)."""
    model = _model()
    rankings = Rankings(model, 10)
    tops = top_k(model, range(40), 10)

    class FilledRightAfterRead(np.ndarray):
        def __getitem__(self, key: object) -> object:
            rows = super().__getitem__(key)  # as they are before the fill
            if rankings.ready == 0:
                rankings.fill(0, tops)
            return rows

    rankings.lengths = rankings.lengths.view(FilledRightAfterRead)
    assert rankings.lookup([3], 5, [None]) == [None]
    assert rankings.ready == 40 and rankings.lookup([3], 5, [None])[0] is not None


def test_a_newer_version_replaces_the_lists_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitting a version drops the earlier lists before the thread gets to it,
    a ranking in progress stops at its next chunk, and progress is reported for
    the version being ranked only."""
    first, second = _model(1, seed=1), _model(2, seed=2)
    paused, resume = threading.Event(), threading.Event()
    progress: list[int] = []
    score = engine.ranked.top_k

    def scoring(model: ServingModel, users: range, k: int) -> list[TopK]:
        if model is first and users.start == 10:  # the first version's second chunk
            paused.set()
            resume.wait(60)
        return score(model, users, k)

    monkeypatch.setattr(engine.ranked, "top_k", scoring)
    ranker = Ranker(depth=5, chunk=10, on_progress=progress.append)
    ranker.start()
    try:
        ranker.submit(first)
        assert paused.wait(60)  # ranking users 10-19 of the first version
        assert ranker.rankings(first) is not None and ranker.rankings(first).ready == 10
        ranker.submit(second)
        assert ranker.rankings(first) is None and ranker.rankings(second) is None
        resume.set()
        rankings = _ranked(ranker, second)
        assert ranker.rankings(first) is None
        assert rankings.items[N_USERS - 1, :5].tolist() == \
            score(second, [N_USERS - 1], 5)[0].items.tolist()
        # submit, first chunk, submit, then the second version from its start: the
        # first version's users 10-19 were ranked but not reported, and no more
        assert progress == [0, 10, 0, *range(10, N_USERS + 1, 10)]
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
