"""The faust-streaming app of ``--engine faust``: one agent over the event topics whose body
only regroups each batch by partition and hands it to the engine (:mod:`streams.faust_worker`),
which runs the same pure :class:`streams.processor.Processor` and sinks as the confluent engine.

Commit-after-durable: the event topics are declared with ``acks=False``, so Faust never
commits their offsets by itself; the Processor commits a partition's offset once its Redis
batch and Parquet files are durable, through the Faust consumer (``Consumer._commit``, the
driver's commit primitive). Faust's own acking was not usable for this (faust-streaming
0.15.3): ``Stream.take_events`` acks every event of a batch in its ``finally`` as soon as the
agent body returns, and ``Consumer._new_offset`` commits past an un-acked head offset
(``if min(acked) - committed_offset > 1`` lets a gap of exactly one offset through).

The catalog topic is not consumed here: every worker needs the whole catalog, so it keeps
its own group-less reader (:class:`streams.catalog.Catalog`). Nothing happens at import time
beyond importing faust; the app is built by :func:`create_faust_app` inside a running loop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import faust
from faust.types import TP as FaustTP

from core.config import Settings
from schemas.events import EVENT_TYPES
from streams.decode import RawRecord
from streams.state import TP

Batch = dict[TP, list[RawRecord]]
AsyncHandler = Callable[..., Awaitable[None]]


def faust_broker(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def group_batch(events: Iterable[faust.EventT], generation: int) -> tuple[Batch, int]:
    """Regroup a take_events batch by partition as raw records (offset order kept). Events
    fetched before the latest rebalance (an older generation) are dropped: their partition
    may have moved, and the new owner reads them from the committed offset."""
    by_tp: defaultdict[TP, list[RawRecord]] = defaultdict(list)
    stale = 0
    for ev in events:
        m = ev.message
        if m.generation_id != generation:
            stale += 1
            continue
        ts = m.timestamp * 1000 if m.timestamp else None  # Faust converts to seconds
        by_tp[(m.topic, m.partition)].append((m.offset, m.key, m.value, ts))
    return dict(by_tp), stale


def create_faust_app(
    settings: Settings,
    *,
    group: str,
    datadir: Path,
    on_batch: AsyncHandler,
    on_assigned: AsyncHandler,
    on_revoked: AsyncHandler,
) -> faust.App:
    """A Faust app (not started) whose agent passes batches of at most
    ``stream_redis_batch_events`` records, waiting at most ``stream_redis_batch_ms``, to
    ``on_batch(batch, stale_count)``; rebalance signals go to ``on_assigned(tps)`` /
    ``on_revoked(tps)`` as lists of ``(topic, partition)``."""
    s = settings
    app = faust.App(
        group,  # the group id: the same as the confluent engine's (one committed position)
        broker=faust_broker(s.kafka.bootstrap),
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,  # ensure_topics made them, with our configuration
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.stream.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, s.stream.session_timeout_ms / 5000),
        broker_max_poll_interval=s.stream.max_poll_interval_ms / 1000,
        stream_buffer_maxsize=max(4096, 2 * s.stream.redis_batch_events),
        # No tracked messages (acks are off), so a revoke has nothing of Faust's to wait for;
        # the on_revoked hook flushes and commits our own work synchronously instead.
        stream_wait_empty=False,
    )
    names = [s.topic(c.TOPIC) for c in EVENT_TYPES.values()]
    topic = app.topic(*names, acks=False, key_serializer="raw", value_serializer="raw")
    batch_n, within = s.stream.redis_batch_events, s.stream.redis_batch_ms / 1000

    async def process(stream: faust.StreamT) -> None:
        # take_events is a method of faust's Stream that its StreamT protocol does not list.
        async for events in stream.take_events(batch_n, within=within):  # type: ignore[attr-defined]
            batch, stale = group_batch(events, app.consumer_generation_id)
            await on_batch(batch, stale)

    app.agent(topic, name="streamrec-events", concurrency=1)(process)

    def tps(raw: Iterable[FaustTP]) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in raw if tp.topic in names)

    # faust's signal stubs want receivers with a keyword-only ``signal`` parameter; faust
    # passes it in ``**kwargs``, which ours take.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(_sender: object, revoked: set[FaustTP], **_: object) -> None:
        await on_revoked(tps(revoked))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(_sender: object, assigned: set[FaustTP], **_: object) -> None:
        await on_assigned(tps(assigned))

    return app
