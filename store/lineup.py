"""Which of the configured strategies serves: ``SMLREC_STRATEGY`` until an
operator (``POST /v1/admin/strategy``) or the automatic promotion chooses another
of the lineup; the choice is kept in the store, so the API replicas and the worker
agree on it and it outlives restarts. A stored choice that the configuration no
longer names is ignored."""

from __future__ import annotations

from collections.abc import Sequence

from smlrec.settings import Settings
from store.dto import StrategyScoreInfo, VersionInfo
from store.repository import Store

SERVING_KEY = "serving_strategy"


def serving_strategy(store: Store, settings: Settings) -> str:
    chosen = store.get_state(SERVING_KEY)
    return chosen if isinstance(chosen, str) and chosen in settings.lineup else settings.strategy


def challengers(serving: str, settings: Settings) -> list[str]:
    """The lineup less the serving strategy, in configuration order."""
    return [name for name in settings.lineup if name != serving]


def choose_serving(store: Store, name: str) -> None:
    store.put_state(SERVING_KEY, name)


def version_of(store: Store, strategy: str, period_id: int) -> VersionInfo | None:
    """``strategy``'s version trained through ``period_id``, if one was recorded."""
    for info in store.list_versions():
        if info.strategy == strategy and info.period_id == period_id:
            return info
    return None


def latest_version_of(store: Store, strategy: str) -> VersionInfo | None:
    """``strategy``'s newest version whose artifact is still on disk."""
    for info in store.list_versions():  # newest first
        if info.strategy == strategy and info.removed_at is None:
            return info
    return None


def promotion_pick(scores: Sequence[StrategyScoreInfo], periods: int, serving: str) -> str | None:
    """The strategy that scored the best recall@20 in each of the newest ``periods``
    scored periods (``scores`` as :meth:`Store.strategy_scores` gives them), if that is
    not ``serving``; else None. A period where the serving strategy ties the best
    counts for it (a switch must be earned); fewer periods scored: None."""
    by_period: dict[int, dict[str, float]] = {}
    for score in scores:
        by_period.setdefault(score.period_id, {})[score.strategy] = score.recall
    newest = sorted(by_period, reverse=True)[:periods]
    if len(newest) < periods:
        return None
    winners = set()
    for period_id in newest:
        recalls = by_period[period_id]
        best = max(recalls.values())
        winners.add(serving if recalls.get(serving) == best else
                    min(name for name, recall in recalls.items() if recall == best))
    (winner,) = winners if len(winners) == 1 else (None,)
    return winner if winner != serving else None
