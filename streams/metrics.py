"""Prometheus metrics of a stream worker, in a registry of their own (one per worker, so
tests can run several in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_SIZE_BUCKETS = (10, 100, 1000, 5000, 10_000, 25_000, 50_000, 100_000, 250_000)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        ns = "streamrec_stream"
        self.events = Counter(
            "events",
            "Events processed, by type and outcome (ok, dead_letter, duplicate).",
            ["event_type", "outcome"],
            namespace=ns,
            registry=r,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Messages sent to the dead-letter topic.",
            ["source_topic"],
            namespace=ns,
            registry=r,
        )
        self.flush_seconds = Histogram(
            "flush_duration_seconds",
            "Parquet snapshot flush (all files + commit).",
            namespace=ns,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.flush_events = Histogram(
            "flush_size_events",
            "Events per Parquet snapshot flush.",
            namespace=ns,
            registry=r,
            buckets=_SIZE_BUCKETS,
        )
        self.files_written = Counter(
            "snapshot_files", "Parquet snapshot files written.", namespace=ns, registry=r
        )
        self.redis_seconds = Histogram(
            "redis_pipeline_duration_seconds",
            "One pipelined Redis micro-batch apply.",
            namespace=ns,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.redis_batch_events = Histogram(
            "redis_batch_size_events",
            "Events per Redis micro-batch.",
            namespace=ns,
            registry=r,
            buckets=_SIZE_BUCKETS,
        )
        self.freshness = Histogram(
            "freshness_seconds",
            "Time from an event's produce time (Kafka timestamp) to its features being "
            "visible in Redis.",
            namespace=ns,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.lag = Gauge(
            "consumer_lag",
            "Messages behind the high watermark, per assigned partition.",
            ["topic", "partition"],
            namespace=ns,
            registry=r,
        )
        self.committed = Gauge(
            "committed_offset",
            "Last committed offset per partition.",
            ["topic", "partition"],
            namespace=ns,
            registry=r,
        )
        self.sink_up = Gauge(
            "sink_up",
            "1 when the sink (redis, storage, kafka) answered its last call.",
            ["sink"],
            namespace=ns,
            registry=r,
        )
        self.retries = Counter(
            "sink_retries",
            "Retries after a sink was unavailable.",
            ["sink"],
            namespace=ns,
            registry=r,
        )
        self.rebalances = Counter(
            "rebalances",
            "Partition assignments and revocations.",
            ["kind"],
            namespace=ns,
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
