"""The Faust engine (``streamrec stream --engine faust``): the app of
:mod:`streams.faust_app` running in an event loop of its own, around the same parts
(:func:`streams.parts.build_parts`: Processor, sinks, catalog, trending) and the same
commit-after-durable cadence as the confluent engine.

The app's consumer hands the agent whole fetched batches (:mod:`streams.faust_consumer`:
Faust's per-record delivery was ~70% of the CPU); a worker whose group already has workers of
the confluent engine is refused by the broker and stops with :class:`EngineConflict`.

Threads: the Faust app (and aiokafka's consumer thread) own the event loop; every call into
the Processor -- batches, the periodic tick, rebalances, the final flush -- runs on one
single-thread executor, so the Processor is used from one thread only and in the order the
loop submitted the calls. Its commit callback hops back onto the loop
(``run_coroutine_threadsafe``) to commit through the Faust consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition as KafkaTP
from confluent_kafka import Consumer, TopicPartition
from faust.types import TP as FaustTP

from core.errors import KafkaError
from streams.errors import EngineConflict, StreamError
from streams.faust_app import create_faust_app
from streams.faust_consumer import Batch, join_refused
from streams.faust_trace import BatchTrace
from streams.parts import (
    Parts,
    Progress,
    Worker,
    bootstrap_catalog,
    build_parts,
    freeze_heap,
    group_id,
    hand_over,
    note_lag,
    take_over,
)
from streams.processor import Processor
from streams.retry import Stopped
from streams.state import TP

log = logging.getLogger(__name__)
T = TypeVar("T")
TICK_S = 0.25
DRAIN_TICK_S = 0.02  # the tick while draining (``streamrec stream --until-caught-up``)


class OffsetGap(StreamError):
    """A partition's records jumped past the next expected offset: processing them would
    commit over unprocessed events, so the worker stops instead (a restart replays)."""

    def __init__(self, tp: TP, expected: int, got: int) -> None:
        self.tp, self.expected, self.got = tp, expected, got
        super().__init__(f"{tp[0]}[{tp[1]}]: expected offset {expected}, got {got}")


class FaustWorker(Worker):
    """Same interface as :class:`streams.worker.StreamWorker` (:class:`streams.parts.Worker`):
    :meth:`run` in a thread, :meth:`stop`."""

    def run(self) -> Progress:
        with ThreadPoolExecutor(1, thread_name_prefix="streams-faust") as pool:
            errors = asyncio.run(self._main(pool))
        if errors:
            raise errors[0]
        return self.progress

    async def _main(self, pool: ThreadPoolExecutor) -> list[BaseException]:
        s = self.settings
        loop = asyncio.get_running_loop()

        async def call(fn: Callable[..., T], *args: object) -> T:
            return await loop.run_in_executor(pool, fn, *args)

        def commit(offsets: dict[TP, int]) -> None:
            # Only ever called once the app below has started (commits follow processing).
            commit_through(app, loop, offsets, s.kafka.bootstrap)

        build = functools.partial(
            build_parts,
            s,
            metrics=self.metrics,
            stop=self.stop_event,
            totals=self.totals,
            commit=commit,
        )
        parts: Parts = await call(build)
        # Committed offsets are read with a group-less client of the same group id (an
        # OffsetFetch, no membership), as the confluent engine does on assignment.
        offsets = Consumer(
            {"bootstrap.servers": s.kafka.bootstrap, "group.id": group_id(s)}, logger=log
        )
        run = _Run(self, parts.processor, offsets, call)
        datadir = tempfile.TemporaryDirectory(prefix="streamrec-faust-")
        try:
            await call(bootstrap_catalog, parts.catalog, s, self.metrics, self.stop_event)
            freeze_heap()
            app = create_faust_app(
                s,
                group=group_id(s),
                datadir=Path(datadir.name),
                on_batch=run.on_batch,
                on_assigned=run.on_assigned,
                on_revoked=run.on_revoked,
            )
            run.app = app
            app.consumer.realign = run.realign  # type: ignore[attr-defined]
            try:
                await start_app(app, group_id(s))
                await run.supervise(app, parts)
                run.stopping = True  # the agent drops what arrives from now on
                await call(parts.processor.flush)  # graceful: processed -> durable -> committed
            except Stopped:
                log.warning("stopped while a sink was down; uncommitted work will be redone")
            finally:
                await app.stop()
        finally:
            await call(parts.processor.close)
            offsets.close()
            parts.close()
            datadir.cleanup()
        return run.errors


async def start_app(app: faust.App, group: str) -> None:
    """``app.start()``, which returns once the group gave the consumer its partitions --
    never, if the broker refuses the join because the group has workers of the confluent
    engine: that is looked for meanwhile and raised as :class:`EngineConflict`."""
    starting = asyncio.ensure_future(app.start())
    while not starting.done():
        await asyncio.wait([starting], timeout=TICK_S)
        if not starting.done() and join_refused(app.consumer):  # type: ignore[arg-type]
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            raise EngineConflict(group, "faust")
    starting.result()


def commit_through(
    app: faust.App, loop: asyncio.AbstractEventLoop, offsets: dict[TP, int], bootstrap: str
) -> None:
    """The Processor's commit (on the executor thread): runs the Faust consumer's commit on
    the loop and waits for it."""
    consumer = app.consumer
    tps = {FaustTP(t, p): off for (t, p), off in offsets.items()}
    # Faust's public commit() commits the offsets Faust tracked itself; ours come from the
    # Processor (durable work only), so the private _commit(offsets) is the one to call.
    ok = asyncio.run_coroutine_threadsafe(
        consumer._commit(tps),  # type: ignore[attr-defined]
        loop,
    ).result(timeout=60)
    mine = consumer.assignment()
    if not ok and any(tp in mine for tp in tps):
        raise KafkaError(f"offset commit of {offsets} failed", bootstrap=bootstrap)


class _Run:
    """One run of the engine: the callbacks of the Faust app and the tick loop, around one
    Processor. Every call into the Processor goes through ``call`` (one executor thread)."""

    def __init__(
        self,
        worker: FaustWorker,
        proc: Processor,
        offsets: Consumer,
        call: Callable[..., Awaitable[Any]],
    ) -> None:
        self.w, self.proc, self.offsets = worker, proc, offsets
        self.call = call
        self.errors: list[BaseException] = []
        self.stopping = False
        self.app: faust.App | None = None  # set once created (before it starts)

    async def supervise(self, app: faust.App, parts: Parts) -> None:
        """The tick loop: catalog, the Parquet cadence, lag and trending, until stopped."""
        w, proc, call = self.w, self.proc, self.call
        next_lag = 0.0
        # Draining until caught up: the lag is looked at every short tick, so the run ends
        # when the backlog is done, not up to a second later (see StreamWorker._loop).
        tick, lag_every = (DRAIN_TICK_S, DRAIN_TICK_S) if w.until_caught_up else (TICK_S, 1.0)
        while not w.stop_event.is_set():
            await asyncio.sleep(tick)
            if app.crashed:
                raise StreamError(f"faust app crashed: {app.crash_reason!r}")
            await call(parts.catalog.poll)
            await call(proc.poll_flush)
            now = time.monotonic()
            if now >= next_lag:
                next_lag = now + lag_every
                await self.update_lag(app)
                if w.until_caught_up and w.progress.caught_up:
                    return
            await call(parts.trending.tick, now, proc.max_event_ts)

    # --- callbacks from the Faust app (on the loop) -------------------------------------
    async def on_batch(self, batch: Batch, stale: int, trace: BatchTrace | None) -> None:
        if stale:
            log.info("dropped %d record(s) fetched before a rebalance", stale)
        if self.stopping or self.w.stop_event.is_set() or not batch:
            return
        try:
            await self.call(self.process, batch, trace)
        except Stopped:
            pass
        except Exception as err:  # the engine stops; uncommitted work is redone
            self.errors.append(err)
            self.w.stop_event.set()

    async def on_assigned(self, tps: list[TP]) -> None:
        assert self.app is not None
        consumer = self.app.consumer
        generation = self.app.consumer_generation_id
        await self.call(self.assign, tps)
        await self.realign()
        # Only now may the consumer fetch for this generation (BatchConsumer).
        consumer.ready_generation = generation  # type: ignore[attr-defined]

    async def realign(self) -> None:
        """Every partition's consumer position back to the offset the Processor expects
        next (the log's start where nothing was committed): records fetched and then
        dropped (a rebalance, Faust clearing the channel) are read again instead of
        skipped; re-read ones are duplicates the Processor drops. Rewinding is always
        safe, so this may run while batches are still queued."""
        assert self.app is not None
        expected = await self.call(self.expected)
        thread = self.app.consumer._thread  # type: ignore[attr-defined]
        at = {KafkaTP(t, p): off for (t, p), off in expected.items() if off >= 0}
        start = [KafkaTP(t, p) for (t, p), off in expected.items() if off < 0]
        try:
            if at:
                await thread.seek_wait(at)
            if start:
                await thread.seek_to_beginning(*start)
        except (IllegalStateError, KeyError, AssertionError) as err:
            # Not ours any more: a newer rebalance, whose assignment realigns again.
            log.info("realign skipped (a newer rebalance): %r", err)

    async def on_revoked(self, tps: list[TP]) -> None:
        if tps:  # the first join "revokes" nothing
            t0 = time.monotonic()
            await self.call(hand_over, self.proc, tps, self.w.metrics, self.w.progress)
            took = time.monotonic() - t0
            # Faust's flight recorder reports a hook past 0.95 x the session timeout as
            # "Task timed out"; say how close we came, and where the time went, before that.
            if took > self.w.settings.stream.session_timeout_ms / 2000:
                log.warning(
                    "revoke hook took %.1f s (flush + commit of %d partition(s))", took, len(tps)
                )

    # --- on the executor thread -------------------------------------------------------
    def process(self, batch: Batch, trace: BatchTrace | None = None) -> None:
        if trace is not None:
            trace.started = time.monotonic()
        for tp, recs in batch.items():
            st = self.proc.parts.get(tp)
            # Offsets of one partition are contiguous on our topics (no transactions, no
            # compaction): a jump means records were skipped and must not be committed over.
            if st is not None and st.next_offset >= 0 and recs[0][0] > st.next_offset:
                raise OffsetGap(tp, st.next_offset, recs[0][0])
        self.proc.process(batch)
        if trace is not None:
            trace.emit(sum(len(r) for r in batch.values()))

    def assign(self, tps: list[TP]) -> None:
        proc = self.proc
        self.w.metrics.rebalances.labels("assign").inc()
        gone = [tp for tp in proc.parts if tp not in tps]
        if gone:  # revoked without our hook having run (should not happen): forget them
            proc.drop(gone)
        new = [TopicPartition(t, p) for t, p in tps if (t, p) not in proc.parts]
        committed = self.offsets.committed(new, timeout=30) if new else []
        take_over(
            proc,
            {(tp.topic, tp.partition): max(tp.offset, -1) for tp in committed},
            self.w.progress,
        )

    def expected(self) -> dict[TP, int]:
        return {tp: st.next_offset for tp, st in self.proc.parts.items()}

    async def update_lag(self, app: faust.App) -> None:
        """The lag, with the broker asked on a thread of its own: a partition nothing was
        read from yet (an idle topic: -1) costs a watermark round trip every second, which
        on the Processor's thread delayed the batches queued behind it (seen: 0.2 s)."""
        positions = await self.call(self.expected)
        total = await asyncio.to_thread(self.lag, app, positions)
        caught_up = functools.partial(note_lag, until_caught_up=self.w.until_caught_up)
        await self.call(caught_up, self.w.progress, total, self.proc)

    def lag(self, app: faust.App, positions: dict[TP, int]) -> int:
        total = 0
        for (topic, p), next_offset in positions.items():
            high = app.consumer.highwater(FaustTP(topic, p))
            if high is None or next_offset < 0:
                # Nothing fetched yet: ask the broker.
                low, high = self.offsets.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                pos = max(next_offset, low)
            else:
                pos = next_offset
            lag = max(0, high - pos)
            self.w.metrics.lag.labels(topic, str(p)).set(lag)
            total += lag
        return total
