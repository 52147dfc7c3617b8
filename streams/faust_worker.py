"""The Faust engine (``streamrec stream --engine faust``): the app of
:mod:`streams.faust_app` running in an event loop of its own, around the same Processor,
sinks and commit-after-durable cadence as the confluent engine.

Threads: the Faust app (and aiokafka's consumer thread) own the event loop; every call into
the Processor -- batches, the periodic tick, rebalances, the final flush -- runs on one
single-thread executor, so the Processor is used from one thread only and in the order the
loop submitted the calls. Its commit callback hops back onto the loop
(``run_coroutine_threadsafe``) to commit through the Faust consumer.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, TopicPartition
from faust.types import TP as FaustTP

from core.errors import KafkaError
from streams.errors import StreamError
from streams.faust_app import Batch, create_faust_app
from streams.processor import Processor
from streams.retry import Stopped
from streams.state import TP
from streams.worker import Progress, StreamWorker, freeze_heap, group_id

log = logging.getLogger(__name__)
T = TypeVar("T")
TICK_S = 0.25


class OffsetGap(StreamError):
    """A partition's records jumped past the next expected offset: processing them would
    commit over unprocessed events, so the worker stops instead (a restart replays)."""

    def __init__(self, tp: TP, expected: int, got: int) -> None:
        self.tp, self.expected, self.got = tp, expected, got
        super().__init__(f"{tp[0]}[{tp[1]}]: expected offset {expected}, got {got}")


class FaustWorker(StreamWorker):
    """Same interface as :class:`StreamWorker`: :meth:`run` in a thread, :meth:`stop`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streams-faust")
        self._app: Any = None
        self._errors: list[BaseException] = []
        self._stopping = False
        self._offsets: Consumer | None = None

    def run(self) -> Progress:
        try:
            asyncio.run(self._main())
        finally:
            self._pool.shutdown(wait=True)
        if self._errors:
            raise self._errors[0]
        return self.progress

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, fn, *args)

    async def _main(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        redis, dead_letters, catalog, proc = await self._call(self._build, self._commit_sync)
        # Committed offsets are read with a group-less client of the same group id (an
        # OffsetFetch, no membership), as the confluent engine does on assignment.
        self._offsets = Consumer(
            {"bootstrap.servers": s.kafka_bootstrap, "group.id": group_id(s)}, logger=log
        )
        datadir = tempfile.TemporaryDirectory(prefix="streamrec-faust-")
        try:
            await self._call(self._bootstrap_catalog, catalog)
            freeze_heap()
            self._app = app = create_faust_app(
                s,
                group=group_id(s),
                datadir=Path(datadir.name),
                on_batch=self._on_batch,
                on_assigned=self._on_assigned,
                on_revoked=self._on_revoked,
            )
            await app.start()
            try:
                await self._supervise(redis, catalog, proc)
                self._stopping = True  # the agent drops what arrives from now on
                await self._call(proc.flush)  # graceful: processed -> durable -> committed
            except Stopped:
                log.warning("stopped while a sink was down; uncommitted work will be redone")
            finally:
                await app.stop()
        finally:
            await self._call(proc.close)
            self._offsets.close()
            catalog.close()
            dead_letters.close()
            self._close_trending()
            redis.close()
            datadir.cleanup()

    async def _supervise(self, redis: Any, catalog: Any, proc: Processor) -> None:
        """The tick loop: catalog, the Parquet cadence, lag and trending, until stopped."""
        s = self.settings
        next_lag = next_trending = 0.0
        while not self.stop_event.is_set():
            await asyncio.sleep(TICK_S)
            if self._app.crashed:
                raise StreamError(f"faust app crashed: {self._app.crash_reason!r}")
            await self._call(catalog.poll)
            await self._call(proc.poll_flush)
            now = time.monotonic()
            if now >= next_lag:
                next_lag = now + 1.0
                await self._call(self._update_lag_faust, proc)
                if self.until_caught_up and self.progress.caught_up:
                    return
            if now >= next_trending and proc.max_event_ts:
                next_trending = now + s.stream_trending_interval_s
                await self._call(self._trending, redis, proc.max_event_ts)

    # --- callbacks from the Faust app (on the loop) -------------------------------------
    async def _on_batch(self, batch: Batch, stale: int) -> None:
        if stale:
            log.info("dropped %d record(s) fetched before a rebalance", stale)
        if self._stopping or self.stop_event.is_set() or not batch:
            return
        try:
            await self._call(self._process, batch)
        except Stopped:
            pass
        except Exception as err:  # the engine stops; uncommitted work is redone
            self._errors.append(err)
            self.stop_event.set()

    def _process(self, batch: Batch) -> None:
        assert self.processor is not None
        for tp, recs in batch.items():
            st = self.processor.parts.get(tp)
            # Offsets of one partition are contiguous on our topics (no transactions, no
            # compaction): a jump means records were skipped and must not be committed over.
            if st is not None and st.next_offset >= 0 and recs[0][0] > st.next_offset:
                raise OffsetGap(tp, st.next_offset, recs[0][0])
        self.processor.process(batch)

    async def _on_assigned(self, tps: list[TP]) -> None:
        await self._call(self._assign, tps)

    def _assign(self, tps: list[TP]) -> None:
        proc = self.processor
        assert proc is not None and self._offsets is not None
        self.metrics.rebalances.labels("assign").inc()
        gone = [tp for tp in proc.parts if tp not in tps]
        if gone:  # revoked without our hook having run (should not happen): forget them
            proc.drop(gone)
        new = [TopicPartition(t, p) for t, p in tps if (t, p) not in proc.parts]
        if new:
            committed = self._offsets.committed(new, timeout=30)
            proc.assign({(tp.topic, tp.partition): max(tp.offset, -1) for tp in committed})
        self.progress.assigned = len(proc.parts)
        log.info("assigned %d partition(s)", len(proc.parts))

    async def _on_revoked(self, tps: list[TP]) -> None:
        if tps:  # the first join "revokes" nothing
            await self._call(self._revoke, tps)

    def _revoke(self, tps: list[TP]) -> None:
        proc = self.processor
        assert proc is not None
        self.metrics.rebalances.labels("revoke").inc()
        try:
            proc.flush()  # hand over cleanly: commit what is durable
        except Stopped:
            pass
        except KafkaError as err:
            log.warning("commit on revoke failed, the next owner replays: %s", err)
        proc.drop(tps)
        self.progress.assigned = len(proc.parts)
        log.info("revoked %d partition(s)", len(tps))

    # --- on the executor thread -------------------------------------------------------
    def _commit_sync(self, offsets: dict[TP, int]) -> None:
        """The Processor's commit: runs the Faust consumer's commit on the loop and waits."""
        assert self._loop is not None and self._app is not None
        consumer = self._app.consumer
        tps = {FaustTP(t, p): off for (t, p), off in offsets.items()}
        fut = asyncio.run_coroutine_threadsafe(consumer._commit(tps), self._loop)
        ok = fut.result(timeout=60)
        mine = consumer.assignment()
        if not ok and any(tp in mine for tp in tps):
            raise KafkaError(f"offset commit of {offsets} failed", self.settings.kafka_bootstrap)

    def _update_lag_faust(self, proc: Processor) -> None:
        consumer = self._app.consumer
        total = 0
        for (topic, p), st in list(proc.parts.items()):
            high = consumer.highwater(FaustTP(topic, p))
            if high is None or st.next_offset < 0:
                # Nothing fetched yet: ask the broker.
                low, high = self._offsets.get_watermark_offsets(  # type: ignore[union-attr]
                    TopicPartition(topic, p), timeout=5
                )
                pos = max(st.next_offset, low)
            else:
                pos = st.next_offset
            lag = max(0, high - pos)
            self.metrics.lag.labels(topic, str(p)).set(lag)
            total += lag
        self._caught_up(total, proc)
