"""Strategy endpoints (admin): every configured strategy's score per evaluated
period, and the choice of which one is served."""

from __future__ import annotations

import logging

from fastapi import HTTPException, Query, status

from engine.holder import ModelLoadError
from service.activation import serve_everywhere
from service.deps import BusDep, HolderDep, SettingsDep, StoreDep, admin_router
from service.schemas import ErrorBody
from service.strategy_schemas import (
    PeriodScores,
    StrategyChoice,
    StrategyOverview,
    StrategyScore,
)
from smlrec.settings import Settings
from store import Store
from store.lineup import challengers, choose_serving, latest_version_of, serving_strategy

log = logging.getLogger(__name__)

router = admin_router()


def _overview(store: Store, settings: Settings, periods: int) -> StrategyOverview:
    serving = serving_strategy(store, settings)
    by_period: dict[int, dict[str, StrategyScore]] = {}
    for row in store.strategy_scores(periods):
        by_period.setdefault(row.period_id, {})[row.strategy] = StrategyScore.model_validate({
            "recall@20": row.recall, "ndcg@20": row.ndcg, "train_seconds": row.train_seconds,
            "version": row.version, "n_interactions": row.n_interactions})
    return StrategyOverview(
        serving=serving,
        challengers=challengers(serving, settings),
        promotion=settings.promotion,
        periods=[PeriodScores(period_id=p, scores=s) for p, s in by_period.items()],
    )


@router.get(
    "/strategies",
    response_model=StrategyOverview,
    response_model_by_alias=True,
    summary="The served strategy, the challengers, and each one's score per period",
)
def list_strategies(
    store: StoreDep,
    settings: SettingsDep,
    periods: int = Query(default=100, ge=1, le=10_000, description="Newest periods shown"),
) -> StrategyOverview:
    """Each strategy's model scored on each closed period it had not trained on,
    with the same metric and sampled negatives as the served version's."""
    return _overview(store, settings, periods)


@router.post(
    "/strategy",
    response_model=StrategyOverview,
    response_model_by_alias=True,
    summary="Serve this strategy's newest model now and from now on",
    responses={
        400: {"model": ErrorBody, "description": "The body cannot be parsed as JSON"},
        409: {"model": ErrorBody, "description": "Not a configured strategy, "
              "or it has no model to serve yet"},
    },
)
def choose_strategy(
    choice: StrategyChoice, store: StoreDep, settings: SettingsDep, bus: BusDep,
    holder: HolderDep,
) -> StrategyOverview:
    """Every replica serves the strategy's newest version within seconds (they are
    told, and they poll); the worker trains it first from the next boundary on."""
    name = choice.strategy
    if name not in settings.lineup:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=(
            f"strategy {name!r} is neither serving nor a challenger "
            f"(configured: {', '.join(settings.lineup)}; see SMLREC_CHALLENGERS)"))
    latest = latest_version_of(store, name)
    if latest is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=(
            f"strategy {name!r} has no model yet: it is trained at the next boundary"))
    try:
        serve_everywhere(latest.version, store, bus, holder, lambda: choose_serving(store, name))
    except (ModelLoadError, KeyError) as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=(
            f"strategy {name!r}'s version {latest.version} cannot be served: {error}"
        )) from error
    log.info("strategy %s chosen: version %d is served", name, latest.version)
    return _overview(store, settings, 100)
