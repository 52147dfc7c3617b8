"""Prometheus counters of the online evaluation (:mod:`streams.online_eval`), registered on
the worker's registry. Named as the Grafana "Online conversion by version" panel expects."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter


class OnlineEvalMetrics:
    """Counters the worker exports (monotonic per process; Redis holds the exact totals)."""

    _by_registry: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "version", "variant"]
        self.served = Counter(
            "streamrec_rollout_impressions",
            "Recommendations served (reco_responses events), by model version and variant.",
            labels,
            registry=registry,
        )
        self.converted = Counter(
            "streamrec_rollout_conversions",
            "Recommendations converted: a recommended item watched within the window.",
            labels,
            registry=registry,
        )
        self.positions = Counter(
            "streamrec_rollout_conversion_positions",
            "Conversions by the 1-based position of the watched item in the list.",
            [*labels, "position"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> OnlineEvalMetrics:
        """One set per registry (a worker may build its Processor more than once)."""
        m = cls._by_registry.get(registry)
        if m is None:
            m = cls._by_registry[registry] = cls(registry)
        return m

    def record(self, counts: dict[tuple[str, str], int]) -> None:
        for (label, metric), n in counts.items():
            parts = label.rsplit("|", 2)
            if len(parts) != 3:
                continue
            if metric == "served":
                self.served.labels(*parts).inc(n)
            elif metric == "converted":
                self.converted.labels(*parts).inc(n)
            elif metric.startswith("pos:"):
                self.positions.labels(*parts, metric[4:]).inc(n)
