"""The Faust consumer of ``--engine faust``: Faust's aiokafka consumer (group membership,
rebalances, flow control, the consumer thread) with its per-message delivery replaced by
whole batches.

Why (py-spy of the stock path, faust-streaming 0.15.3, sessions backlog): ~70% of the
worker's CPU went to Faust's per-record machinery, not to our processing -- for every
record ``Consumer._drain_messages`` wraps the delivery in ``Service.wait_first``, which
creates two tasks and an ``asyncio.wait`` (~30% with the loop overhead they cause), the
Conductor builds a ``Message`` and an ``Event`` and puts it on the stream's queue, and the
Stream's ``take_events`` takes them off one by one (~25%). The engine ran at ~1.3k ev/s
where the confluent engine did ~35k on the same (loaded) machine.

:class:`BatchConsumer` keeps everything of Faust's consumer that has a job here (the
aiokafka consumer on its thread, ``_wait_next_records``: flow control during rebalances and
the active partitions) and hands each fetched batch -- raw ``(offset, key, value, ts_ms)``
tuples per partition, up to ``cadence.events`` records or ``batch_s`` after the first -- to
``deliver(batch, generation)`` in one call: one Faust event per batch instead of one per
record (see :mod:`streams.faust_app`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import InconsistentGroupProtocolError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from streams import faust_trace
from streams.decode import RawRecord
from streams.faust_trace import BatchTrace
from streams.state import TP

if TYPE_CHECKING:
    from streams.worker import Cadence

Batch = dict[TP, list[RawRecord]]
Deliver = Callable[[Batch, int, BatchTrace | None], Awaitable[None]]

# The group protocol (assignment strategy) name the Faust engine joins with. The confluent
# engine joins with librdkafka's "roundrobin"; a group admits a member only if it shares a
# protocol with the group, so a worker of the other engine is refused by the broker itself
# (INCONSISTENT_GROUP_PROTOCOL) -- atomically, with no marker to keep alive.
FAUST_PROTOCOL = "streamrec-faust-roundrobin"

# aiokafka's fetch_max_wait_ms for the Faust engine (see _Thread._create_worker_consumer).
FETCH_MAX_WAIT_MS = 50
# ... and its fetch_min_bytes (same place).
FETCH_MIN_BYTES = 16 * 1024


class EngineAssignor(RoundRobinPartitionAssignor):
    """aiokafka's round-robin assignment under a name of the Faust engine's own."""

    name = FAUST_PROTOCOL


class _Thread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its group coordinator.
        consumer._partition_assignment_strategy = (EngineAssignor,)
        # Read by start() when it builds the fetcher. Faust hard-codes 1,500 ms, and that
        # was the Faust engine's ~2 s freshness tail (issue 15): aiokafka sends one fetch
        # per broker at a time, and leaves out the partitions whose fetched records are
        # still buffered (not yet taken by a fill) for longer than prefetch_backoff
        # (100 ms) -- under load, exactly the busy ones. The fetch then asks only for idle
        # partitions, the broker holds it the whole max wait, and no fetch for the busy
        # partitions can go out meanwhile: they fall ~1.5 s behind, the next fetch returns
        # 1.5 s of records, a fill cannot take them all within 100 ms, and the cycle
        # repeats -- a standing backlog with the CPU to spare. 50 ms: such a fetch now
        # blocks the busy partitions 50 ms. The cost is an idle group's fetch every 50 ms
        # (measured: ~2% of a core, 0.6-0.7 s of CPU more in a 35 s run at 20 events/s).
        # Not the confluent engine's 10 ms (stream.fetch_max_wait_ms): an idle Faust worker
        # then took 11.7% of a core against 4.3% (each fetch is a Python round trip), and
        # 3+3 freshness runs at 5,000/s gave p50 46-61 against 65-86 ms but p99s of the
        # same spread (158-345 against 116-720 ms).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        # aiokafka fetches again as soon as a fill has taken the last response, so with
        # fetch_min_bytes=1 a live stream meant a fetch every few ms (5-15 per 20 ms fill),
        # each a Python round trip through aiokafka's thread: about half the worker's CPU
        # at 1,500 events/s. 16 KiB (~80 of our records) or the 50 ms above, whichever
        # comes first: at 1,500/s the worker's CPU halved (6.6-7.5 s against 9.0-15.8 s a
        # 30 s run, interleaved pairs; the confluent engine's 6.6-8.1 s) with p99s of the
        # same order; a live event waits at most those 50 ms at the broker.
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer


class BatchConsumer(AIOKafkaConsumer):
    """Set ``deliver``, ``realign``, ``cadence`` and ``batch_s`` before the app starts.

    Fetching waits until the engine has taken the current assignment over
    (``ready_generation``, set by its on_assigned hook after it re-positioned every
    partition at the next offset its Processor expects): a batch fetched before that would
    reach the Processor before it knows the partitions, which drops such records -- and
    for a partition nothing was ever committed for, nothing would notice the hole."""

    deliver: Deliver
    # Moves every partition's position back to the Processor's next offset (the engine's
    # _Run.realign): records fetched and then dropped are read again, never skipped.
    realign: Callable[[], Awaitable[None]]
    cadence: Cadence  # the batch cap (streams.worker.Cadence, as the confluent engine's)
    batch_s = 0.02
    ready_generation = -1  # the generation the engine has taken over (see above)
    # A fill dropped fetched records: positions must go back before the next fill (see
    # _drain_messages).
    realign_due = False
    _room = 10_000  # records the fill in progress may still take (one fetch's max_records)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _Thread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # Faust's own _getmany asks for max_poll_records; a fill asks for what it has room
        # for, so a delivered batch never exceeds the cap.
        thread = self._thread
        return await thread.call_thread(
            thread._fetch_records,
            thread._ensure_consumer(),
            active_partitions,
            timeout=timeout,
            max_records=self._room,
        )

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetcher task (replaces the per-message loop): fill a batch, deliver it."""
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        while not (stopped() or fetcher_stopped()):
            if self.ready_generation != self.app.consumer_generation_id:
                await asyncio.sleep(0.01)  # the engine's on_assigned hook is not done yet
                continue
            if self.realign_due:
                # Records a fill dropped moved the positions past them. Rewound only now
                # that the assignment's hook is done: a drop that landed while the hook was
                # still re-positioning (between its seeks) would otherwise outlive it --
                # the positions stayed past the dropped records, and the next batch jumped
                # over them (OffsetGap; the takeover test's flake, 1 run in 3).
                self.realign_due = False
                await self.realign()
                continue
            trace = BatchTrace() if faust_trace.enabled() else None
            batch, generation = await self._fill(trace)
            if batch:
                await self.deliver(batch, generation, trace)

    async def _fill(self, trace: BatchTrace | None = None) -> tuple[Batch, int]:
        """Up to ``cadence.events`` records, returned ``batch_s`` after the first one arrived
        at the latest (as the confluent engine's ``consume(n, timeout)``); empty after a
        second without records, when stopping, or when a rebalance began or completed
        meanwhile (the records are then dropped and read again: see ``realign``)."""
        app, cap = self.app, self.cadence.events
        generation = app.consumer_generation_id
        batch: Batch = {}
        n, timeout, deadline = 0, 1.0, 0.0
        read_offset = self._read_offset
        while True:
            self._room = cap - n
            records, active = await self._wait_next_records(timeout)
            if self.should_stop:
                return {}, generation
            if app.consumer_generation_id != generation or not self.flow_active:
                # A rebalance began or completed meanwhile: what this fill fetched is
                # dropped, and the positions go back before the next fill. (Faust's
                # perform_seek was not enough: aiokafka's seek_to_committed leaves a
                # partition without a committed offset where it is, past the drop.)
                if n or records:
                    self.realign_due = True
                return {}, generation
            for tp, recs in (records or {}).items():
                if not recs:
                    continue
                if active is not None and tp not in active:
                    self.realign_due = True  # paused meanwhile: read again later
                    continue
                raw = [(r.offset, r.key, r.value, r.timestamp) for r in recs]
                have = batch.get((tp.topic, tp.partition))
                if have is None:
                    batch[(tp.topic, tp.partition)] = raw
                else:
                    have.extend(raw)
                n += len(raw)
                read_offset[tp] = recs[-1].offset  # Faust's stall detector reads these
                if trace is not None:
                    trace.note_records(
                        f"{tp.topic[-5:]}{tp.partition}", len(raw), raw[0][3], raw[-1][3]
                    )
            now = time.monotonic()
            if trace is not None:
                trace.fetches += 1
            if not deadline:
                if not n:
                    return {}, generation  # idle: back to the loop, which checks for stop
                deadline = now + self.batch_s
                if trace is not None:
                    trace.first = now
            timeout = deadline - now
            if n >= cap or timeout <= 0:
                if trace is not None:
                    self._trace_filled(trace, cap, now)
                self.cadence.update(n)
                return batch, generation

    def _trace_filled(self, trace: BatchTrace, cap: int, now: float) -> None:
        trace.cap, trace.filled, trace.filled_wall = cap, now, time.time()
        aio = getattr(self._thread, "_consumer", None)
        subs = getattr(aio, "_subscription", None)
        paused = subs.paused_partitions() if subs is not None else set()
        trace.paused = len(paused) + len(self._paused_partitions)
        trace.flow = self.flow_active


def join_refused(consumer: BatchConsumer) -> bool:
    """Whether the broker refused our JoinGroup because the group's members speak another
    protocol (workers of the confluent engine: see :data:`FAUST_PROTOCOL`). aiokafka keeps
    such a fatal error for the next fetch, which never comes without an assignment, so the
    engine's tick loop looks for it here (read only; the consumer thread owns the object)."""
    aio = getattr(consumer._thread, "_consumer", None)
    coordinator = getattr(aio, "_coordinator", None)
    pending = getattr(coordinator, "_pending_exception", None)
    return isinstance(pending, InconsistentGroupProtocolError)
