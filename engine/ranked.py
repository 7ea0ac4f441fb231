"""Each served version's top lists: a user's best items, ranked once per version.

A model version does not change while it serves, and neither does what it has
seen (the artifact's seen items): a user's top ``depth`` items are the same for
every request until the next swap. So each version's users are ranked once, in
the background (:mod:`engine.ranker`), with the scorer's exact top-k
(:func:`engine.scorer.top_k`: the items a request would get, their scores to
float rounding, which differs between products of different batch sizes
anyway), and requests read their answer from the lists:

- the items the user interacted with since the model's period (the request's
  ``extra_seen``) are dropped from the list; the first ``k`` left are the
  answer, exactly what scoring with those items masked returns;
- a filter (the items not hidden, or one category's) drops the items it does
  not allow the same way: the first ``k`` allowed items left are the answer,
  since the list holds the user's best items of the whole catalogue;
- when fewer than ``k`` are left, ``k`` exceeds the depth, the request keeps
  seen items in (``exclude_seen=false``), or the user has no list (not ranked
  yet, or beyond the capacity), the request is scored as before
  (:class:`engine.batcher.ScoringBatcher`).

The lists are bounded: at most ``capacity`` users of a version have one
(``SMLREC_PRECOMPUTE_USERS``), in slots filled in the order the ranking thread
reaches them, so memory is capacity x depth x 8 bytes plus 4 bytes per user of
the model for the slot index, whatever the number of users. Each slot records
whether a request looked it up: those users, the ones active while the version
served, are ranked first for the next version. Once every slot is taken, a user
whose request finds no list takes the slot of a user no request has looked up
(the lists follow the users who ask, not the order they were filled in); a slot
being rewritten is never read as anyone's list (each slot has a generation,
odd while it is rewritten, that a lookup reads before and after).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from engine.holder import ServingModel
from engine.scorer import TopK, extra_pairs

DEFAULT_DEPTH = 50
# Most users with a list per version (SMLREC_PRECOMPUTE_USERS): 200 MB at depth 50.
DEFAULT_CAPACITY = 500_000


# Which of an array of item indices may be answered (same shape, bool).
Allowed = Callable[[np.ndarray], np.ndarray]


def list_may_answer(depth: int, k: int, members: int, n_items: int) -> bool:
    """Whether lists of ``depth`` items are worth reading for ``k`` items of a filter
    that lets ``members`` of ``n_items`` items through. A list answers only when ``k``
    of its items pass; a filter's members fill ``depth * members / n_items`` of a list
    when they are spread through the ranking, and below ``k`` a list answers only
    the users whose best items gather in the filter, while every miss costs the read
    on top of the scoring. (Reading or not, the answer is the same.)"""
    return depth * members >= k * n_items


class Listed(NamedTuple):
    """One user's answer from a list: item indices by score descending, and scores."""

    items: list[int]
    scores: list[float]


class Rankings:
    """One version's top lists for up to ``capacity`` of its users. Slot s holds
    user ``user_of[s]``'s best ``depth`` unseen items by score, descending
    (``lengths[s]`` of them; fewer only when the user has not that many unseen
    items); ``slot_of[u]`` is user u's slot, -1 while u has none. Slots
    ``[0, filled)`` are in use. A slot is written before ``slot_of`` points at
    it, so a lookup that finds a user's slot finds it filled; only the ranking
    thread fills. ``used[s]``: a request looked slot s up. A slot no request
    looked up may be given to another user (:meth:`fill`): ``gen[s]`` is odd
    while it is rewritten and grows by two each time, so a lookup that read it
    meanwhile discards what it read."""

    def __init__(self, model: ServingModel, depth: int, capacity: int = DEFAULT_CAPACITY) -> None:
        rows = max(0, min(capacity, model.n_users))
        self.model = model
        self.depth = depth
        self.items = np.empty((rows, depth), dtype=np.int32)  # (rows, depth)
        self.scores = np.empty((rows, depth), dtype=np.float32)  # (rows, depth)
        self.lengths = np.zeros(rows, dtype=np.int32)  # (rows,)
        self.user_of = np.empty(rows, dtype=np.int64)  # (rows,) slot -> user
        self.used = np.zeros(rows, dtype=bool)  # (rows,)
        self.slot_of = np.full(model.n_users, -1, dtype=np.int32)  # (n_users,) user -> slot
        self.gen = np.zeros(rows, dtype=np.int64)  # (rows,) odd while a slot is rewritten
        self.filled = 0
        self._hand = 0  # where the search for slots to give away goes on from

    @property
    def capacity(self) -> int:
        return len(self.lengths)

    @property
    def room(self) -> int:
        """Slots still free."""
        return self.capacity - self.filled

    def reusable(self) -> int:
        """Filled slots that no request has looked up: a user who asks may take one."""
        filled = self.filled
        return filled - int(np.count_nonzero(self.used[:filled]))

    def unranked(self, users: np.ndarray) -> np.ndarray:
        """Those of ``users`` (dense indices) that are the model's and have no
        list yet, each once, in their first order."""
        users = np.asarray(users, dtype=np.int64)
        users = users[(users >= 0) & (users < self.model.n_users)]
        _, first = np.unique(users, return_index=True)
        users = users[np.sort(first)]
        return users[self.slot_of[users] < 0]

    def fill(self, users: Sequence[int] | np.ndarray, tops: list[TopK]) -> int:
        """Give ``users`` (without a list yet) their lists from ``tops``: the free
        slots first, then slots no request has looked up (their users' lists go);
        how many got one."""
        users = np.asarray(users, dtype=np.int64)[: len(tops)]
        free = min(len(users), self.room)
        taken = self._unused(len(users) - free)  # (T,) slots given to other users
        slots = np.concatenate([np.arange(self.filled, self.filled + free), taken])
        self.gen[taken] += 1  # odd: a lookup reading these now discards what it read
        self.slot_of[self.user_of[taken]] = -1
        for slot, top in zip(slots.tolist(), tops, strict=False):
            n = len(top.items)
            self.items[slot, :n] = top.items
            self.scores[slot, :n] = top.scores
            self.lengths[slot] = n
        placed = users[: len(slots)]
        self.user_of[slots] = placed
        self.gen[taken] += 1
        self.filled += free
        self.slot_of[placed] = slots.astype(np.int32)  # publishes them
        return len(slots)

    def _unused(self, n: int) -> np.ndarray:
        """Up to ``n`` filled slots no request has looked up, taken round the slots
        from where the last search ended."""
        filled = self.filled
        if n <= 0 or not filled:
            return np.empty(0, dtype=np.int64)
        order = (np.arange(filled, dtype=np.int64) + self._hand) % filled
        found = order[~self.used[order]][:n]
        if len(found):
            self._hand = int(found[-1] + 1) % filled
        return found

    def active(self) -> np.ndarray:
        """The users whose list a request looked up, in slot order."""
        filled = self.filled
        return self.user_of[:filled][self.used[:filled]]

    def missing(self, users: Sequence[int]) -> np.ndarray:
        """Those of ``users`` with no list (as indices of this model)."""
        rows_of = np.asarray(users, dtype=np.int64)
        return rows_of[self.slot_of[rows_of] < 0]

    def touch(self, users: Sequence[int]) -> None:
        """Mark ``users``' lists looked up without reading them (their request was
        answered otherwise): they are active users all the same."""
        slots = self.slot_of[np.asarray(users, dtype=np.int64)]
        self.used[slots[slots >= 0]] = True

    def lookup(self, users: Sequence[int], k: int, extra_seen: Sequence[np.ndarray | None],
               allowed: Allowed | None = None) -> list[Listed | None]:
        """Each user's top ``k`` without its ``extra_seen`` items (item indices),
        and only of the items ``allowed`` lets through (a category, the visible
        items), or None where the list cannot tell it (no list, ``k`` beyond the
        depth, or too few items left once those are dropped: score that user).
        One pass of array operations for all the users; the lists looked up are
        marked used."""
        if k > self.depth or not self.capacity:
            return [None] * len(users)
        # the slots are read before the rows: a list published later counts as absent
        asked = np.asarray(users, dtype=np.int64)
        slots = self.slot_of[asked].astype(np.int64)  # (B,)
        listed = slots >= 0
        at = np.where(listed, slots, 0)  # (B,) a real slot for every row; unlisted ones ignored
        before, owners = self.gen[at], self.user_of[at]  # copies, read before the rows
        longest = max((len(e) for e in extra_seen if e is not None), default=0)
        # dropping m items leaves k of the first k + m, unless the list ends first;
        # a filter may drop any number: the whole list is read
        window = self.depth if allowed is not None else min(self.depth, k + longest)
        items = self.items[at, :window]  # (B, W)
        lengths = self.lengths[at]  # (B,)
        keep = np.arange(window) < lengths[:, None]  # (B, W)
        if allowed is not None:
            keep &= allowed(items)
        rows, dropped = extra_pairs(extra_seen, self.model.n_items)  # (P,), (P,)
        if len(rows):
            pair, position = np.nonzero(items[rows] == dropped[:, None])
            keep[rows[pair], position] = False
        kept = keep.sum(axis=1)  # (B,)
        first = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # (B, <=k) kept positions
        top_items = np.take_along_axis(items, first, axis=1).tolist()
        top_scores = np.take_along_axis(self.scores[at, :window], first, axis=1).tolist()
        # a slot given to another user meanwhile, or being rewritten, was not this user's
        listed &= (self.gen[at] == before) & (before % 2 == 0) & (owners == asked)
        # a list shorter than the depth holds every unseen item: what it keeps is the answer
        answered = listed & ((kept >= k) | (lengths < self.depth))
        self.used[at[listed]] = True  # the user is active, answered from here or not
        counts = np.minimum(kept, k).tolist()
        return [Listed(top_items[b][:n], top_scores[b][:n]) if ok else None
                for b, (ok, n) in enumerate(zip(answered.tolist(), counts, strict=True))]
