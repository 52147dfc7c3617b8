"""Retry with capped exponential backoff while a sink (Redis, storage, Kafka) is down.

Only what can pass is retried: a Kafka error that no retry can fix (a record over a size
limit, a denied authorization; :mod:`streams.kafka_errors`) raises :class:`KafkaRejected`
at once instead of holding the worker forever."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from core.errors import KafkaError, StorageError
from streams.errors import KafkaRejected, SinkUnavailable
from streams.kafka_errors import permanent_cause
from streams.metrics import StreamMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE: tuple[type[BaseException], ...] = (SinkUnavailable, StorageError, KafkaError, OSError)


class Stopped(Exception):
    """The worker is stopping while a sink is still down: give up without committing."""


def retry(
    fn: Callable[[], T],
    *,
    sink: str,
    metrics: StreamMetrics,
    stop: threading.Event,
    max_backoff_s: float = 30.0,
    first_backoff_s: float = 0.1,
) -> T:
    """Call ``fn`` until it succeeds. While it fails the worker holds (commits nothing),
    logs the outage once and then every minute, and backs off up to ``max_backoff_s``.
    Raises KafkaRejected for a permanent Kafka error."""
    backoff = first_backoff_s
    down_since: float | None = None
    last_log = 0.0
    while True:
        try:
            result = fn()
        except RETRYABLE as err:
            cause = permanent_cause(err)
            if cause is not None:
                raise KafkaRejected(f"a {sink} call", f"{cause.name()}: {err}") from err
            now = time.monotonic()
            metrics.sink_up.labels(sink).set(0)
            metrics.retries.labels(sink).inc()
            if down_since is None:
                down_since = now
                log.warning("%s unavailable, holding commits and retrying: %s", sink, err)
                last_log = now
            elif now - last_log >= 60:
                log.warning("%s still unavailable after %.0f s: %s", sink, now - down_since, err)
                last_log = now
            if stop.wait(backoff):
                raise Stopped(sink) from err
            backoff = min(backoff * 2, max_backoff_s)
            continue
        metrics.sink_up.labels(sink).set(1)
        if down_since is not None:
            log.warning("%s is back after %.1f s; catching up", sink, time.monotonic() - down_since)
        return result
