"""The stream processor: Kafka event topics -> validated events -> real-time features in
Redis and Parquet snapshots, with offsets committed only once both are durable.

Public API: :func:`create_app` (a worker, not started) and :func:`run_worker`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.app import Summary
    from streams.parts import Worker

__all__ = ["create_app", "run_worker"]


def create_app(settings: Any, **kwargs: Any) -> Worker:
    from streams.app import create_app as _create

    return _create(settings, **kwargs)


def run_worker(settings: Any, **kwargs: Any) -> Summary:
    from streams.app import run_worker as _run

    return _run(settings, **kwargs)
