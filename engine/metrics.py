"""Prometheus metrics of one application instance.

Every app gets its own :class:`CollectorRegistry`, so several apps (tests,
replicas in one process) never share or collide on counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from store import Store

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RETRAIN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class ServiceMetrics:
    """The counters, gauges and histograms ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._define_http(self.registry)
        self._define_ingestion(self.registry)
        self._define_model(self.registry)
        self._define_serving(self.registry)
        for reason in ("no_model", "unknown_user"):
            self.fallbacks.labels(reason=reason)

    def _define_http(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "smlrec_http_requests", "HTTP requests by route template, method and status code",
            ["method", "route", "status"], registry=r,
        )
        self.latency = Histogram(
            "smlrec_http_request_duration_seconds", "HTTP request latency by route template",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )

    def _define_ingestion(self, r: CollectorRegistry) -> None:
        self.interactions_accepted = Counter(
            "smlrec_interactions_accepted", "Interactions accepted (made durable)", registry=r
        )
        self.interactions_duplicate = Counter(
            "smlrec_interactions_duplicate", "Interactions skipped as repeated event ids",
            registry=r,
        )
        self.interactions_dropped = Gauge(
            "smlrec_interactions_dropped",
            "Interactions the worker dropped because they would have passed a cap on new "
            "users or items per period (distributed mode), all periods",
            registry=r,
        )
        self.interactions_refused = Counter(
            "smlrec_interactions_refused",
            "Interactions refused with 429 because their batch would have passed a cap on "
            "new users or items per period (embedded mode)",
            registry=r,
        )

    def _define_model(self, r: CollectorRegistry) -> None:
        self.retrain_duration = Histogram(
            "smlrec_retrain_duration_seconds",
            "Training time of each model version recorded while this process ran",
            buckets=RETRAIN_BUCKETS, registry=r,
        )
        self.active_version = Gauge(
            "smlrec_active_model_version", "Model version this replica serves (0: none)",
            registry=r,
        )
        self.swaps = Counter(
            "smlrec_model_swaps", "Model versions swapped in (hot swaps)", registry=r
        )
        self.swap_failures = Counter(
            "smlrec_model_swap_failures",
            "Model versions that could not be loaded (the previous one kept serving)",
            registry=r,
        )
        self.periods_failed = Gauge(
            "smlrec_periods_failed",
            "Closed periods whose retrain gave up after its retries (see /v1/admin/periods)",
            registry=r,
        )
        self.model_age = Gauge(
            "smlrec_model_age_seconds",
            "Seconds since the version this replica serves was recorded (0: no model)",
            registry=r,
        )
        self.last_retrain = Gauge(
            "smlrec_last_retrain_timestamp_seconds",
            "Unix time the newest model version was recorded (0: none yet)", registry=r,
        )
        self.evaluated_version = Gauge(
            "smlrec_last_evaluated_version",
            "Newest version scored on the period after its own (0: none yet)", registry=r,
        )
        self.evaluated_quality = Gauge(
            "smlrec_last_evaluated_quality",
            "That version's Recall@20 and NDCG@20 on the period after its own",
            ["metric"], registry=r,
        )
        self.strategy_quality = Gauge(
            "smlrec_strategy_quality",
            "Each strategy's (served or challenger) Recall@20 and NDCG@20 on the newest "
            "scored period", ["strategy", "metric"], registry=r,
        )
        self.open_period = Gauge(
            "smlrec_open_period_interactions",
            "Interactions stored in the open period so far", registry=r,
        )

    def _define_serving(self, r: CollectorRegistry) -> None:
        self.fallbacks = Counter(
            "smlrec_fallbacks_served",
            "Recommendation results served from popularity instead of the model",
            ["reason"], registry=r,
        )
        self.scoring_batch = Histogram(
            "smlrec_scoring_batch_size",
            "Single-user requests scored together in one matrix product",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r,
        )
        self.precomputed_answers = Counter(
            "smlrec_precomputed_answers",
            "Known users answered from the served version's precomputed top lists",
            registry=r,
        )
        self.ranked_users = Gauge(
            "smlrec_ranked_users",
            "Users of the served version whose top lists are precomputed so far",
            registry=r,
        )

    def observe_retrain(self, seconds: float) -> None:
        """Record one retrain's duration (also callable by an in-process worker)."""
        self.retrain_duration.observe(max(0.0, seconds))

    def refresh_from_store(self, store: Store, served_version: int | None,
                           now: float | None = None) -> None:
        """Set the gauges whose values the store holds (shared by every replica: the
        worker records them); raises StoreUnavailable, leaving the last values."""
        now = time.time() if now is None else now
        self.periods_failed.set(len(store.failed_periods()))
        self.interactions_dropped.set(store.dropped_total())
        self.open_period.set(store.count_open())
        newest = store.newest_version()
        self.last_retrain.set(newest.created_at if newest is not None else 0.0)
        served = store.get_version(served_version) if served_version is not None else None
        self.model_age.set(max(0.0, now - served.created_at) if served is not None else 0.0)
        evaluated = store.newest_version(  # of the served lineage, not a challenger's
            evaluated=True, strategy=served.strategy if served is not None else None)
        self.evaluated_version.set(evaluated.version if evaluated is not None else 0)
        if evaluated is not None and evaluated.metrics:
            for metric in ("recall@20", "ndcg@20"):
                value = evaluated.metrics.get(metric)
                if value is not None:
                    self.evaluated_quality.labels(metric=metric).set(float(value))
        for score in store.strategy_scores(periods=1):
            self.strategy_quality.labels(strategy=score.strategy, metric="recall@20").set(
                score.recall)
            self.strategy_quality.labels(strategy=score.strategy, metric="ndcg@20").set(
                score.ndcg)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
