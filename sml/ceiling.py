"""How well a synthetic log can be ranked at all: the protocol's metrics of a scorer that
knows what generated the log (:class:`sml.synthetic.SyntheticTruth`).

An interaction of user u in period p picks a topic (u's long-term distribution with
probability ``long_term_weight``, else u's short-term topic of p) and then an item of
that topic by its weight in p. So the chance that u takes item j in p is

    P(j | u, p) = P(topic(j) | u, p) * weight_p(j) / (sum of weight_p over topic(j))

(a draw of a pair taken before is dropped, not redrawn for u, so the items u took
earlier do not change the odds among the others). Ranking a row's candidates (the
positive and its negatives) by it is as well as a model can rank them, given what it
knows of u, up to one effect of the protocol: the negatives are drawn among the items
u *never* takes, so an item of u's topics is a little less likely to be among them than
the ranking assumes. What the ranking may know:

- ``period``: u's long-term distribution and short-term topic of p itself. No
  retrainer can know the latter: it arrives with the period being scored.
- ``previous``: the short-term topic of p - 1, which stays with probability
  1 - ``drift`` and otherwise jumps to one of the other topics: what a model
  retrained at p's start could know at best.
- ``long_term``: the long-term distribution alone.
- ``popularity``: the items' weights alone (the same ranking for every user).

Every level knows the items' current weights and topics exactly; a model has to
estimate both too, from the interactions, so the gap between a model and the
``previous`` level is what better retraining could still gain.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np

from sml.candidates import Candidates
from sml.data import InteractionLog
from sml.synthetic import SyntheticTruth

Knowledge = Literal["period", "previous", "long_term", "popularity"]
KNOWLEDGE: tuple[Knowledge, ...] = ("period", "previous", "long_term", "popularity")


def topic_probabilities(
    truth: SyntheticTruth, users: np.ndarray, period: int, knows: Knowledge
) -> np.ndarray:
    """(n, topics): the chance that a draw of each of ``users`` (generator indices) in
    ``period`` follows each topic, as far as ``knows`` tells."""
    c = truth.config
    n_topics = c.n_topics
    if knows == "popularity":
        return np.ones((len(users), n_topics))
    long_term = truth.long_term[users]
    if knows == "long_term":
        return long_term
    if knows == "period" or period == 0:
        short = np.eye(n_topics)[truth.short_term[period][users]]
    elif knows == "previous":
        stays = np.eye(n_topics)[truth.short_term[period - 1][users]]
        jump = c.drift / (n_topics - 1) if n_topics > 1 else 0.0
        short = (1.0 - c.drift) * stays + jump * (1.0 - stays)
    else:
        raise ValueError(f"knows must be one of {KNOWLEDGE}, got {knows!r}")
    return c.long_term_weight * long_term + (1.0 - c.long_term_weight) * short


def interest(
    truth: SyntheticTruth, users: np.ndarray, items: np.ndarray, period: int, knows: Knowledge
) -> np.ndarray:
    """(n, C): what P(j | u, period) of each row's ``items`` (n, C) owes to its user (n,),
    all generator indices: the chance of the item's topic over the topic's weight."""
    weight = truth.weight[period]
    pool = np.bincount(truth.item_topic, weights=weight, minlength=truth.config.n_topics)
    topics = truth.item_topic[items]  # (n, C)
    chance = np.take_along_axis(topic_probabilities(truth, users, period, knows), topics, axis=1)
    return np.divide(chance, pool[topics], out=np.zeros(items.shape), where=pool[topics] > 0)


def item_probabilities(
    truth: SyntheticTruth, users: np.ndarray, items: np.ndarray, period: int, knows: Knowledge
) -> np.ndarray:
    """(n, C): P(j | u, period) of each row's ``items`` (n, C) for its user (n,), all
    generator indices; 0 for an item that has not arrived by ``period``."""
    return interest(truth, users, items, period, knows) * truth.weight[period][items]


@functools.lru_cache(maxsize=8)
def generator_indices(ids: tuple[str, ...]) -> np.ndarray:
    """The generator's index of each external id ("u17" -> 17, "i4" -> 4), read-only
    (kept for the next call with the same ids)."""
    out = np.fromiter((int(x[1:]) for x in ids), dtype=np.int64, count=len(ids))
    out.flags.writeable = False
    return out


Value = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def per_row(
    log: InteractionLog, truth: SyntheticTruth, candidates: Candidates, start: int, stop: int,
    value: Value,
) -> np.ndarray:
    """(stop - start, 1 + negatives): ``value(users, items, period)`` of each candidate of
    the log's rows [start, stop), in generator indices and each row's generator period;
    column 0 is the row's own item."""
    users = generator_indices(log.user_ids)[np.asarray(log.users[start:stop], dtype=np.int64)]
    items = generator_indices(log.item_ids)[candidates.for_rows(start, stop).astype(np.int64)]
    periods = truth.period_of(log.timestamps[start:stop])
    out = np.zeros(items.shape)
    for p in np.unique(periods).tolist():
        rows = np.flatnonzero(periods == p)
        out[rows] = value(users[rows], items[rows], p)
    return out


def ceiling_scores(
    log: InteractionLog, truth: SyntheticTruth, candidates: Candidates, start: int, stop: int,
    knows: Knowledge,
) -> np.ndarray:
    """(stop - start, 1 + negatives): P(j | u, p) of each candidate of the log's rows
    [start, stop), column 0 the row's own item, as :func:`sml.metrics.ranks` takes it."""
    return per_row(log, truth, candidates, start, stop,
                   lambda users, items, p: item_probabilities(truth, users, items, p, knows))
