"""streamrec / Streams: stream workers' throughput, dead letters, lag, freshness, flushes
and Redis."""

from __future__ import annotations

from typing import Any

from .panels import W, dashboard, panel, quantiles, row, target


def build() -> dict[str, Any]:
    lag = "sum by (topic) (max by (topic, partition) (streamrec_stream_consumer_lag))"
    return dashboard(
        "streamrec-streams",
        "streamrec / Streams",
        "Stream workers: throughput, dead letters, lag, freshness, flushes and Redis.",
        [
            row("Throughput"),
            panel(
                "Events/s by type and outcome",
                [
                    target(
                        f"sum by (event_type, outcome) (rate(streamrec_stream_events_total[{W}]))",
                        "{{event_type}} {{outcome}}",
                    )
                ],
                unit="ops",
                stack=True,
            ),
            panel(
                "Dead letters/s by source topic",
                [
                    target(
                        f"sum by (source_topic) (rate(streamrec_stream_dead_letters_total[{W}]))",
                        "{{source_topic}}",
                    )
                ],
                unit="ops",
                description="Alert StreamrecDeadLetterRateHigh above 1% of events.",
            ),
            row("Lag and freshness"),
            panel(
                "Consumer lag by topic",
                [target(lag, "{{topic}}")],
                description="Messages behind the high watermark. Alert StreamrecConsumerLagHigh.",
            ),
            panel(
                "Freshness (produce to Redis)",
                quantiles("streamrec_stream_freshness_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                description="Alert StreamrecFreshnessP99High above 5 s.",
            ),
            row("Sinks"),
            panel(
                "Parquet flush duration",
                quantiles("streamrec_stream_flush_duration_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                width=8,
            ),
            panel(
                "Redis micro-batch duration",
                quantiles("streamrec_stream_redis_pipeline_duration_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                width=8,
            ),
            panel(
                "Sinks up",
                [target("min by (sink) (streamrec_stream_sink_up)", "{{sink}}")],
                description="1 when the sink answered its last call; retries follow a 0.",
                width=8,
            ),
            row("Redis"),
            panel(
                "Redis memory",
                [
                    target("max by (instance) (redis_memory_used_bytes)", "used"),
                    target("max by (instance) (redis_memory_used_rss_bytes)", "rss"),
                    target(
                        "max by (instance) (redis_memory_max_bytes)", "maxmemory (0: unlimited)"
                    ),
                ],
                unit="bytes",
            ),
            panel(
                "Redis keys and commands/s",
                [
                    target("sum(redis_db_keys)", "keys"),
                    target(f"sum(rate(redis_commands_processed_total[{W}]))", "commands/s"),
                ],
            ),
        ],
    )
