"""The faust-streaming app of ``--engine faust``: one agent that receives whole batches of
the event topics' records and hands them to the engine (:mod:`streams.faust_worker`), which
runs the same pure :class:`streams.processor.Processor` and sinks as the confluent engine.

Batches, not events: Faust's consumer delivers each record on its own (a ``Message``, an
``Event``, tasks per record), which cost ~70% of the worker's CPU. The app's consumer is
:class:`streams.faust_consumer.BatchConsumer`, which fetches up to
``stream_redis_batch_events`` records (``stream_redis_batch_ms`` after the first at most;
the cap follows the confluent engine's :class:`streams.worker.Cadence`) and sends them as
ONE event on an in-memory channel that the agent iterates: Faust still owns the group,
rebalances, flow control and the agent; the per-record work is ours (the Processor decodes
the raw bytes).

Commit-after-durable: nothing of the event topics is ever acked to Faust (the records do
not go through Faust's ``Message`` tracking at all, and the topics are declared with
``acks=False``), so Faust's own commit loop has nothing to commit. The Processor commits a
partition's offset once its Redis batch and Parquet files are durable, through the Faust
consumer (``Consumer._commit``, the driver's commit primitive). Faust's acking was not
usable for this (0.15.3): ``Stream.take_events`` acks every event of a batch as soon as the
agent body returns, and ``Consumer._new_offset`` commits past an un-acked head offset.

Rebalances: Faust stops the flow (fetches wait, the channel's queue is cleared); a batch
fetched or queued before the rebalance carries its generation and is dropped by the agent;
our ``on_partitions_revoked`` hook makes what was processed durable and commits it before
the partitions go (the next owner replays the rest). On assignment the engine takes the
partitions over from their committed offsets and moves every position to the offset its
Processor expects next (the log's start if nothing was committed) BEFORE the consumer
fetches again (``BatchConsumer.ready_generation``): whatever was dropped is read again,
nothing is skipped, and no batch reaches the Processor before it knows the partitions.

The catalog topic is not consumed here: every worker needs the whole catalog, so it keeps
its own group-less reader (:class:`streams.catalog.Catalog`). Nothing happens at import time
beyond importing faust; the app is built by :func:`create_faust_app` inside a running loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import faust
from faust.types import TP as FaustTP

from core.config import Settings
from schemas.events import EVENT_TYPES
from streams.errors import StreamError
from streams.faust_consumer import Batch, BatchConsumer
from streams.faust_trace import BatchTrace
from streams.state import TP
from streams.worker import Cadence

AsyncHandler = Callable[..., Awaitable[None]]

# Batches waiting for the agent: one being filled by the consumer while the agent works on
# the previous one is all the overlap there is to gain (the Processor itself pipelines its
# Redis call); more would only hold records the next owner must replay after a rebalance.
CHANNEL_BATCHES = 2


def faust_broker(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


class StreamrecApp(faust.App):
    """A Faust app whose consumer delivers batches (:class:`BatchConsumer`)."""

    def _new_consumer(self) -> Any:
        return BatchConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.loop,
        )


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
    ``stream_redis_batch_events`` records (see Cadence), waiting at most
    ``stream_redis_batch_ms`` after the first, to ``on_batch(batch, stale_count, trace)``
    (trace: a :class:`streams.faust_trace.BatchTrace` when tracing, else None);
    rebalance signals go to ``on_assigned(tps)`` / ``on_revoked(tps)`` as lists of
    ``(topic, partition)``."""
    s = settings
    app = StreamrecApp(
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
        # One fetch never returns more than a batch (BatchConsumer asks for what is left).
        broker_max_poll_records=s.stream.redis_batch_events,
        # Per partition and fetch: 4 MiB. Faust's default, 1 MiB, is ~5,000 of our records
        # (~200 bytes each), so one partition's fetch could not fill a 10,000-record batch.
        # Reasoned from the record size, not measured apart from the batching (the shared
        # machine's load swamps a single setting's effect). Memory bound: 4 MiB x partitions.
        consumer_max_fetch_size=4 * 1024 * 1024,
        # Never used for the event topics (nothing is acked); kept long so Faust's commit
        # loop does not wake up for nothing.
        broker_commit_interval=60.0,
        # No tracked messages, so a revoke has nothing of Faust's to wait for; the
        # on_revoked hook flushes and commits our own work synchronously instead.
        stream_wait_empty=False,
    )
    names = [s.topic(c.TOPIC) for c in EVENT_TYPES.values()]
    # Registered with the conductor (so the consumer subscribes to them) but consumed by
    # BatchConsumer, not by a per-record stream.
    app.topics.add(app.topic(*names, acks=False, key_serializer="raw", value_serializer="raw"))
    batches = app.channel(maxsize=CHANNEL_BATCHES)
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    # The confluent engine's cadence: small batches while caught up (freshness), doubling
    # while a backlog keeps them full (throughput).
    consumer.cadence = Cadence(s.stream.redis_batch_min_events, s.stream.redis_batch_events)
    consumer.batch_s = s.stream.redis_batch_ms / 1000

    async def deliver(batch: Batch, generation: int, trace: BatchTrace | None) -> None:
        if not batches._subscribers:  # type: ignore[attr-defined]
            # The agent subscribes when it starts, before the first assignment; a batch
            # sent to no one would be lost (and then committed over).
            raise StreamError("faust engine: a batch arrived before the agent started")
        if trace is not None:
            trace.chan = sum(sub.queue.qsize() for sub in batches._subscribers)  # type: ignore[attr-defined]
        try:
            await batches.send(value=(batch, generation, trace))
            if trace is not None:
                trace.sent = time.monotonic()
        except asyncio.CancelledError:
            # A revoke's flow_control.clear() empties the channel and CANCELS a put
            # waiting for room (mode's ThrowableQueue.clear) -- while the agent worked on
            # a batch under load. Faust's fetcher takes that for its own cancellation and
            # crashes the app (a revoke hook that then never finished, the takeover
            # test's flake). Only a cancellation of this task is one; a cancelled put
            # drops the batch like the cleared ones, read again after the assignment.
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise

    consumer.deliver = deliver

    async def process(stream: faust.StreamT) -> None:
        try:
            async for batch, generation, trace in stream:
                if generation != app.consumer_generation_id:
                    # Fetched before the latest rebalance: the partitions may have moved,
                    # and the engine's realign reads these records again.
                    await on_batch({}, sum(len(r) for r in batch.values()), None)
                    continue
                if trace is not None:
                    trace.received = time.monotonic()
                await on_batch(batch, 0, trace)
        except asyncio.CancelledError:
            # Cancelled while the app stops -- or, when a worker is refused (or stops)
            # before the agent service finished starting, by asyncio.run's final sweep,
            # which Faust's actor logs as "Restarting on rebalance" plus a "Crashed"
            # traceback beside our one-line error. Stopping is no crash: end quietly.
            if not app.should_stop:
                raise

    app.agent(batches, name="streamrec-events", concurrency=1)(process)

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
