"""Prometheus metrics of the API, on a registry per app (tests build many apps per process).

With several uvicorn workers ``streamrec serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start, and ``/metrics`` then aggregates every worker's files instead of answering for
whichever worker happened to take the scrape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from schemas.rollout import (
    ANSWERED_FALLBACK,
    ANSWERED_MODEL,
    ANSWERED_PRODUCTION,
    NO_REASON,
    RECOMMEND_METRIC,
)
from serving.registry_metrics import RegistryFacts

# Fine below 50 ms (the budget) where the interesting latencies are.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    # labels -> child, per metric (:meth:`labelled`).
    _children: dict[tuple[object, tuple[str, ...]], Any] = field(
        default_factory=dict, init=False, repr=False
    )

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, memoised: prometheus_client takes a lock and builds
        the label key on every call, and every request makes a few (issue 14's profile).
        Children are never removed from these metrics, so a memoised one stays current."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def __post_init__(self) -> None:
        r = self.registry
        self.request_seconds = Histogram(
            "streamrec_serving_request_seconds",
            "Request latency by endpoint, variant, model version and status.",
            ["endpoint", "variant", "model_version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The rollout controller judges canary vs production on this one: labelled by the
        # variant the user was assigned, so a canary's timeouts and errors stay the canary's
        # even when the fallback (or production) answered them.
        self.recommend_seconds = Histogram(
            RECOMMEND_METRIC,
            "Latency of /recommend by the variant and version the user was assigned to "
            "(production, canary; none without a production model), what answered "
            "(model, production, fallback), the fallback reason and the status.",
            ["assigned_variant", "assigned_version", "answered_by", "fallback_reason", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "streamrec_serving_fallbacks", "Fallback answers by reason.", ["reason"], registry=r
        )
        self.cache_hits = Counter(
            "streamrec_serving_model_cache_hits", "Model cache hits.", registry=r
        )
        self.cache_misses = Counter(
            "streamrec_serving_model_cache_misses", "Model cache misses.", registry=r
        )
        self.cache_evictions = Counter(
            "streamrec_serving_model_cache_evictions", "Model versions evicted.", registry=r
        )
        self.result_cache = Counter(
            "streamrec_serving_result_cache",
            "Memoised model answers: hit or miss.",
            ["result"],
            registry=r,
        )
        # Both series exist from the start (at 0): a hit-ratio panel or rule over a label that
        # has not happened yet would otherwise show "no data" instead of 0%.
        for result in ("hit", "miss"):
            self.result_cache.labels(result)
        # Model calls made together (serving.batcher): calls / batches is the mean batch.
        self.model_batches = Counter(
            "streamrec_serving_model_batches", "Batches of model calls made.", registry=r
        )
        self.model_batch_calls = Counter(
            "streamrec_serving_model_batch_calls", "Model calls made in batches.", registry=r
        )
        self.model_loads = Counter(
            "streamrec_serving_model_loads", "Model loads by outcome.", ["outcome"], registry=r
        )
        self.model_load_seconds = Histogram(
            "streamrec_serving_model_load_seconds",
            "Time to load a model version from the registry.",
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.models_loaded = Gauge(
            "streamrec_serving_models_loaded",
            "Model versions in the cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_dropped = Counter(
            "streamrec_serving_log_dropped",
            "Request/response log events dropped because the producer queue was full.",
            ["topic"],
            registry=r,
        )
        self.feedback = Counter(
            "streamrec_serving_feedback", "Feedback events by outcome.", ["outcome"], registry=r
        )
        # Live versions, model age, canary weight, alias history: computed per scrape from the
        # alias document this process adopted (serving.registry_metrics).
        self.registry_facts = RegistryFacts()
        r.register(self.registry_facts)

    def render(self) -> tuple[bytes, str]:
        """The exposition text (all workers' when running multi-process)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            merged.register(self.registry_facts)  # every worker reads the same aliases
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def assignment_labels(assigned: tuple[str, int] | None) -> tuple[str, str]:
    """(assigned_variant, assigned_version) of a routed user; "none" with no production."""
    return ("none", "none") if assigned is None else (assigned[0], str(assigned[1]))


def answer_labels(
    assigned: tuple[str, int] | None, variant: str, fallback_reason: str | None
) -> tuple[str, str]:
    """(answered_by, fallback_reason): the assigned model, production standing in for a
    canary that could not answer, or the fallback with its reason."""
    if variant == ANSWERED_FALLBACK:
        return ANSWERED_FALLBACK, fallback_reason or NO_REASON
    if assigned is not None and variant != assigned[0]:
        return ANSWERED_PRODUCTION, NO_REASON
    return ANSWERED_MODEL, NO_REASON
