"""Strategy scores: every configured strategy's model (the served one and each
challenger) scored on the period that just closed, one row per period and strategy."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.sql.schema import Table

from store._base import StoreBase
from store.dto import StrategyScoreInfo
from store.models import StrategyScore


def _score_info(row: StrategyScore) -> StrategyScoreInfo:
    return StrategyScoreInfo(
        period_id=row.period_id,
        strategy=row.strategy,
        version=row.version,
        recall=row.recall,
        ndcg=row.ndcg,
        n_interactions=row.n_interactions,
        train_seconds=row.train_seconds,
        created_at=row.created_at,
    )


class ScoresMixin(StoreBase):
    def record_score(
        self,
        *,
        period_id: int,
        strategy: str,
        version: int | None,
        metrics: dict[str, Any],
        train_seconds: float,
    ) -> bool:
        """Record ``strategy``'s score on ``period_id`` (``metrics`` as the online
        metric gives it). The first score stands: a repeated boundary scores the
        same model on the same data, so a second row is dropped. True if written."""
        table: Table = StrategyScore.__table__  # type: ignore[assignment]
        stmt = self._insert(table).values(
            period_id=int(period_id),
            strategy=strategy,
            version=version,
            recall=float(metrics["recall@20"]),
            ndcg=float(metrics["ndcg@20"]),
            n_interactions=int(metrics["n_interactions"]),
            train_seconds=float(train_seconds),
            created_at=time.time(),
        ).on_conflict_do_nothing(index_elements=["period_id", "strategy"])
        with self._tx() as session:  # a row comes back only where one went in
            return session.execute(stmt.returning(table.c.period_id)).first() is not None

    def strategy_scores(self, periods: int | None = None) -> list[StrategyScoreInfo]:
        """Scores of the newest ``periods`` scored periods (all: None), newest period
        first, strategies by name within a period."""
        with self._tx() as session:
            wanted = select(StrategyScore.period_id).distinct()
            if periods is not None:
                wanted = wanted.order_by(StrategyScore.period_id.desc()).limit(periods)
            ids = list(session.scalars(wanted))
            if not ids:
                return []
            rows = session.scalars(
                select(StrategyScore)
                .where(StrategyScore.period_id.in_(ids))
                .order_by(StrategyScore.period_id.desc(), StrategyScore.strategy)
            )
            return [_score_info(row) for row in rows]
