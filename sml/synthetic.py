"""A seeded synthetic interaction log whose users' interests drift between periods,
and its named profiles (``--dataset synthetic``, ``synthetic-returning``, ``synthetic-yelp``,
``synthetic-yelp-small``, ``synthetic-repeat``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sml.data import InteractionLog, from_records


@dataclass(frozen=True)
class SyntheticConfig:
    """A seeded log of topical users whose short-term interest drifts between periods.

    Every interaction follows the user's long-term interest with probability
    `long_term_weight`, else their short-term topic, which jumps to another topic with
    probability `drift` at each period. The long-term interest is one topic, or, with
    `topic_concentration` set, a mixture over topics drawn from a symmetric Dirichlet
    (small values: a few favourite topics). Items have a topic and a Zipf-like
    popularity; with `freshness` > 0 an item is more popular while it is new (weight
    1 + freshness * exp(-age / freshness_decay), age in periods). Users and items keep
    arriving; with `churn` > 0 an active user leaves for good with that probability at
    each later period. With `repeat` > 0 that share of a period's interactions (after
    the first period) are a user going back to an item of their own earlier periods,
    drawn uniformly from their history, as plays repeat in a listening log; the other
    interactions are pairs new to the log.
    """

    n_periods: int = 6
    interactions_per_period: int = 2000
    n_users_initial: int = 200
    n_items_initial: int = 300
    new_users_per_period: int = 40
    new_items_per_period: int = 30
    n_topics: int = 8
    drift: float = 0.3  # chance per period that a user's short-term topic jumps
    long_term_weight: float = 0.6  # chance an interaction follows the long-term interest
    topic_concentration: float | None = None  # Dirichlet concentration of long-term mixtures
    popularity_skew: float = 1.0  # Zipf-like exponent of item popularity
    freshness: float = 0.0  # extra popularity of a brand-new item, as a multiple
    freshness_decay: float = 2.0  # periods for that extra popularity to fall by e
    churn: float = 0.0  # chance per period that an active user leaves for good
    repeat: float = 0.0  # share of a period's interactions that repeat an earlier pair
    seed: int = 0
    start_time: float = 1_600_000_000.0
    period_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if min(self.n_periods, self.n_users_initial, self.n_items_initial, self.n_topics) < 1:
            raise ValueError("n_periods, n_users_initial, n_items_initial, n_topics must be >= 1")
        if min(self.interactions_per_period, self.new_users_per_period,
               self.new_items_per_period) < 0:
            raise ValueError("interaction and arrival counts must be >= 0")
        if not (0 <= self.drift <= 1 and 0 <= self.long_term_weight <= 1
                and 0 <= self.churn < 1 and 0 <= self.repeat < 1):
            raise ValueError("drift, long_term_weight, churn and repeat are probabilities "
                             "(churn and repeat < 1)")
        if self.topic_concentration is not None and not self.topic_concentration > 0:
            raise ValueError("topic_concentration must be positive")
        if self.freshness < 0 or not self.freshness_decay > 0:
            raise ValueError("freshness must be >= 0 and freshness_decay > 0")
        if self.period_seconds <= 0:
            raise ValueError("period_seconds must be positive")


_RETURNING = SyntheticConfig(
    n_periods=20,
    interactions_per_period=5000,
    n_users_initial=400,
    n_items_initial=2000,
    new_users_per_period=50,
    new_items_per_period=60,
    n_topics=20,
    drift=0.3,
    long_term_weight=0.7,
    topic_concentration=0.3,
    freshness=2.0,
    freshness_decay=2.0,
    churn=0.1,
)

# Yelp's size, with the drift, long-term mixtures and freshness of the log above
_YELP = replace(
    _RETURNING,
    n_periods=40,
    interactions_per_period=75_000,
    n_users_initial=20_000,
    n_items_initial=44_000,
    new_users_per_period=1_020,
    new_items_per_period=2_330,
    n_topics=50,
    churn=0.05,
)

SYNTHETIC_PROFILES: dict[str, SyntheticConfig] = {
    # the small default log of the tests and demos
    "synthetic": SyntheticConfig(),
    # Users who keep coming back (about 85% of a period's interactions after the first
    # period, as in a music listening log) with a stable mixture of favourite topics
    # and a drifting short-term one, and items whose popularity is highest while they
    # are new: long-term memory and recency both matter. 20 periods of 5,000
    # interactions and about 75 interactions per user, like MovieLens-100K.
    "synthetic-returning": _RETURNING,
    # The same users going back to what they played before: 40% of each later period's
    # interactions repeat one of the user's earlier pairs (a listening log's replays),
    # so a model's memory of each user's own history is worth more than on the log above.
    "synthetic-repeat": replace(_RETURNING, repeat=0.4),
    # Yelp's size as the paper used it (about 3.0M interactions, 59k users, 123k items,
    # 40 equal periods, so 75,000 interactions a period) with the returning users and
    # drift of the profile above: the log for measuring retraining cost at that size.
    # A third of the users and items are there from the start, the rest arrive evenly.
    "synthetic-yelp": _YELP,
    # The same log at a tenth of its size (300,000 interactions, 40 periods of 7,500;
    # users and items a tenth too, so as many interactions per user): a Yelp-shaped
    # replay in minutes instead of hours.
    "synthetic-yelp-small": replace(
        _YELP,
        interactions_per_period=7_500,
        n_users_initial=2_000,
        n_items_initial=4_400,
        new_users_per_period=102,
        new_items_per_period=233,
    ),
}


def _arrivals(initial: int, per_period: int, n_periods: int) -> np.ndarray:
    """Arrival period of each entity: `initial` at period 0, then `per_period` each period."""
    later = np.repeat(np.arange(1, n_periods, dtype=np.int64), per_period)
    return np.concatenate([np.zeros(initial, dtype=np.int64), later])


def _pick(rng: np.random.Generator, cumulative: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn with probabilities proportional to the steps of `cumulative`."""
    picks = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")
    return np.minimum(picks, len(cumulative) - 1)


class _TopicSampler:
    """Draws items of given topics by weight, among the items available in a period."""

    def __init__(self, available: np.ndarray, topic: np.ndarray, weight: np.ndarray,
                 n_topics: int) -> None:
        self.every = available
        self.every_cdf = np.cumsum(weight[available])
        self.pools = [available[topic[available] == t] for t in range(n_topics)]
        self.cdfs = [np.cumsum(weight[pool]) for pool in self.pools]

    def draw(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """An item per entry of `topics`; topic -1 (or an empty topic) means any item."""
        items = np.empty(len(topics), dtype=np.int64)
        for t in np.unique(topics).tolist():
            rows = np.flatnonzero(topics == t)
            pool, cdf = (self.pools[t], self.cdfs[t]) if t >= 0 and len(self.pools[t]) else (
                self.every, self.every_cdf)
            items[rows] = pool[_pick(rng, cdf, len(rows))]
        return items


def _mixtures_and_stays(
    rng: np.random.Generator, c: SyntheticConfig, user_arrival: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """Each user's long-term topic mixture as a cumulative (U, topics) table (None: one
    fixed topic each), and the first period each user is gone (inf: never)."""
    n_users = len(user_arrival)
    mixture = None
    if c.topic_concentration is not None:
        mixture = np.cumsum(rng.dirichlet(np.full(c.n_topics, c.topic_concentration),
                                          size=n_users), axis=1)  # (U, topics)
    stay = np.full(n_users, np.inf)  # (U,) the first period a user is gone
    if c.churn > 0:
        stay = user_arrival + rng.geometric(c.churn, size=n_users)
    return mixture, stay


def _drift(rng: np.random.Generator, c: SyntheticConfig, short_term: np.ndarray) -> None:
    """Each user's short-term topic jumps to another one with probability ``drift``."""
    jump = rng.random(len(short_term)) < c.drift
    shift = rng.integers(1, c.n_topics, int(jump.sum()))  # never the same topic
    short_term[jump] = (short_term[jump] + shift) % c.n_topics


def _stamps(rng: np.random.Generator, c: SyntheticConfig, period: int, count: int) -> np.ndarray:
    """``count`` increasing timestamps within the period's window, in draw order."""
    step = c.period_seconds / max(count, 1)
    offsets = (np.arange(count) + rng.random(count)) * step  # increasing within [0, P)
    return c.start_time + period * c.period_seconds + offsets


def _topics(
    rng: np.random.Generator, c: SyntheticConfig, who: np.ndarray, short_term: np.ndarray,
    long_term: np.ndarray, mixture: np.ndarray | None,
) -> np.ndarray:
    """The topic of each draw by ``who``: the user's short-term topic, or with probability
    ``long_term_weight`` a long-term one (the fixed topic, or one from the user's mixture)."""
    topics = short_term[who].copy()
    follow_long = rng.random(len(who)) < c.long_term_weight
    if mixture is None:
        topics[follow_long] = long_term[who[follow_long]]
    else:
        favourite = mixture[who[follow_long]]  # (L, topics)
        draws = rng.random(len(favourite))[:, None] * favourite[:, -1:]
        topics[follow_long] = np.minimum((favourite < draws).sum(1), c.n_topics - 1)
    return topics


def _repeats(rng: np.random.Generator, c: SyntheticConfig, period: int, active: np.ndarray,
             user_cdf: np.ndarray, seen: np.ndarray, n_items: int) -> np.ndarray:
    """The period's repeats: ``repeat`` x its interactions, each an earlier pair (a key of
    the sorted ``seen``) of an active user drawn by activity, uniform over that user's
    history (users without one are skipped). None in the first period or without a
    repeat share, and then nothing is drawn."""
    if not c.repeat or period == 0:
        return seen[:0]
    limit = round(c.repeat * c.interactions_per_period)
    who = active[_pick(rng, user_cdf, 2 * limit)]
    lo, hi = np.searchsorted(seen, who * n_items), np.searchsorted(seen, (who + 1) * n_items)
    has = hi > lo
    lo, hi = lo[has], hi[has]
    picked = lo + np.minimum((rng.random(len(lo)) * (hi - lo)).astype(np.int64), hi - lo - 1)
    return seen[picked][:limit]


def _spread(rng: np.random.Generator, keys: np.ndarray, again: np.ndarray) -> np.ndarray:
    """The period's new keys with its repeats shuffled in among them (no draw without)."""
    if not len(again):
        return keys
    return np.concatenate([keys, again])[rng.permutation(len(keys) + len(again))]


def _with_fresh(period_keys: np.ndarray, keys: np.ndarray, seen: np.ndarray,
                limit: int) -> np.ndarray:
    """The period's keys so far followed by the drawn ``keys`` that are new to the log
    and to the period, in draw order, at most ``limit``."""
    pos = np.searchsorted(seen, keys).clip(max=max(len(seen) - 1, 0))
    fresh = keys[~(seen[pos] == keys)] if len(seen) else keys
    candidates = np.concatenate([period_keys, fresh])
    _, first = np.unique(candidates, return_index=True)
    return candidates[np.sort(first)][:limit]


@dataclass(frozen=True)
class SyntheticTruth:
    """What generated a synthetic log, for measuring how far a model is from the best
    possible ranking of it (:mod:`sml.ceiling`). Entity ``k`` is ``"u{k}"`` / ``"i{k}"``
    in the log; ``period`` is the generator's period, as :meth:`period_of` reads it off a
    timestamp."""

    config: SyntheticConfig
    item_topic: np.ndarray  # (I,) each item's topic
    long_term: np.ndarray  # (U, topics) each user's long-term topic distribution
    short_term: np.ndarray  # (P, U) each user's short-term topic in each period
    weight: np.ndarray  # (P, I) each item's draw weight in each period (0 before it arrives)

    def period_of(self, timestamps: np.ndarray) -> np.ndarray:
        """The generator's period of each timestamp."""
        c = self.config
        return np.floor((np.asarray(timestamps) - c.start_time) / c.period_seconds).astype(np.int64)


def synthetic_drift(config: SyntheticConfig = SyntheticConfig()) -> InteractionLog:
    """Interactions of users with a long-term interest and a drifting short-term one
    (see :func:`synthetic_drift_with_truth`)."""
    return _generate(config, None)


def synthetic_drift_with_truth(
    config: SyntheticConfig = SyntheticConfig(),
) -> tuple[InteractionLog, SyntheticTruth]:
    """The log of :func:`synthetic_drift` (the same for the same config) and what
    generated it: every user's interests and every item's topic and weight, per period.

    Each period, active users are drawn by their activity (Gamma(2) per user), each
    draw picks a topic (long-term or short-term, see `SyntheticConfig`) and then an
    item of that topic by its current weight. Without ``repeat`` a (user, item) pair
    occurs at most once in the log: draws repeating an earlier pair are dropped and the
    period is topped up by further draws, from the whole catalogue once the topics run dry (a period
    may come out short only when its users have seen nearly everything). Vectorised per
    period. With ``repeat`` the repeated pairs are drawn from each user's history, which
    the truth does not describe: it gives the chance of each new pair.
    """
    kept: list[SyntheticTruth] = []
    log = _generate(config, kept)
    return log, kept[0]


def _generate(config: SyntheticConfig, truth: list[SyntheticTruth] | None) -> InteractionLog:
    """The log; with ``truth`` a list, what generated it is appended to it."""
    c = config
    rng = np.random.default_rng(c.seed)
    user_arrival = _arrivals(c.n_users_initial, c.new_users_per_period, c.n_periods)
    item_arrival = _arrivals(c.n_items_initial, c.new_items_per_period, c.n_periods)
    n_users, n_items = len(user_arrival), len(item_arrival)
    item_topic = rng.integers(c.n_topics, size=n_items)
    popularity = (1.0 + rng.permutation(n_items)) ** -c.popularity_skew  # (I,)
    long_term = rng.integers(c.n_topics, size=n_users)
    short_term = rng.integers(c.n_topics, size=n_users)
    activity = rng.gamma(2.0, size=n_users)  # (U,) how often each user comes back
    mixture, stay = _mixtures_and_stays(rng, c, user_arrival)
    seen = np.zeros(0, dtype=np.int64)  # sorted keys user * n_items + item
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    times: list[np.ndarray] = []
    shorts: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for p in range(c.n_periods):
        if p > 0 and c.n_topics > 1:
            _drift(rng, c, short_term)
        active = np.flatnonzero((user_arrival <= p) & (stay > p))
        available = np.flatnonzero(item_arrival <= p)
        age = p - item_arrival
        weight = popularity * (1.0 + c.freshness * np.exp(-np.maximum(age, 0) / c.freshness_decay))
        sampler = _TopicSampler(available, item_topic, weight, c.n_topics)
        if truth is not None:
            shorts.append(short_term.copy())
            weights.append(np.where(item_arrival <= p, weight, 0.0))
        user_cdf = np.cumsum(activity[active])
        again = _repeats(rng, c, p, active, user_cdf, seen, n_items)  # of earlier pairs
        period_keys = np.zeros(0, dtype=np.int64)  # in draw order
        for attempt in range(16):
            wanted = c.interactions_per_period - len(again) - len(period_keys)
            if wanted <= 0 or len(active) == 0:
                break
            n = wanted + wanted // 4 + 16
            who = active[_pick(rng, user_cdf, n)]
            topics = _topics(rng, c, who, short_term, long_term, mixture)
            if attempt >= 8:  # users who have seen most of their topics: any item will do
                topics[:] = -1
            keys = who * n_items + sampler.draw(rng, topics)
            period_keys = _with_fresh(period_keys, keys, seen,
                                      c.interactions_per_period - len(again))
        fresh = np.sort(period_keys)  # new to the log, distinct: an insert keeps it sorted
        seen = np.insert(seen, np.searchsorted(seen, fresh), fresh)
        period_keys = _spread(rng, period_keys, again)
        users.append(period_keys // n_items)
        items.append(period_keys % n_items)
        times.append(_stamps(rng, c, p, len(period_keys)))
    if truth is not None:
        truth.append(_truth(c, item_topic, long_term, mixture, shorts, weights))
    timestamps = np.concatenate(times) if times else np.empty(0)
    all_users = np.concatenate(users) if users else np.zeros(0, dtype=np.int64)
    all_items = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    return from_records(np.char.add("u", all_users.astype(str)),
                        np.char.add("i", all_items.astype(str)), timestamps)


def _truth(
    c: SyntheticConfig, item_topic: np.ndarray, long_term: np.ndarray,
    mixture: np.ndarray | None, shorts: list[np.ndarray], weights: list[np.ndarray],
) -> SyntheticTruth:
    """The generator's state as a :class:`SyntheticTruth` (``mixture`` cumulative)."""
    if mixture is None:
        distribution = np.eye(c.n_topics)[long_term]
    else:
        distribution = np.diff(mixture, axis=1, prepend=0.0)
    return SyntheticTruth(
        config=c,
        item_topic=item_topic,
        long_term=distribution,
        short_term=np.stack(shorts) if shorts else np.zeros((0, len(long_term)), np.int64),
        weight=np.stack(weights) if weights else np.zeros((0, len(item_topic))),
    )
