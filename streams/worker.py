"""The consumer loop of a stream worker (one thread): Kafka -> Processor, rebalances, lag,
trending and the catalog.

Events are consumed with confluent-kafka (librdkafka) in batches, offsets are committed only
by :meth:`Processor.flush`, never automatically. Workers sharing the group id
``<topic_prefix>.<stream_app_id>`` share the event topics' partitions.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from core.config import Settings
from core.errors import KafkaError
from streams import loop_trace
from streams.decode import RawRecord
from streams.errors import EngineConflict
from streams.loop_trace import LoopTrace
from streams.metrics import StreamMetrics
from streams.parts import (
    GC_THRESHOLDS,
    Parts,
    Progress,
    Worker,
    bootstrap_catalog,
    build_parts,
    event_topics,
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

# Re-exported: tests and tools name them from here.
# The broker's refusal of a join whose group protocol the group's members do not speak.
INCONSISTENT_GROUP_PROTOCOL = RdKafkaError.INCONSISTENT_GROUP_PROTOCOL

__all__ = ["GC_THRESHOLDS", "Cadence", "Progress", "StreamWorker", "consumer_config", "group_id"]


def consumer_config(settings: Settings) -> dict[str, object]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group_id(settings),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "roundrobin",
        "session.timeout.ms": settings.stream.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.stream.session_timeout_ms // 5),
        # Holding while Redis or the store is down must not get us kicked out of the group.
        "max.poll.interval.ms": settings.stream.max_poll_interval_ms,
        "fetch.wait.max.ms": settings.stream.fetch_max_wait_ms,
        "fetch.min.bytes": settings.stream.fetch_min_bytes,
        "queued.min.messages": 200_000,
    }


def commit_offsets(consumer: Consumer, offsets: dict[TP, int], bootstrap: str) -> None:
    """The Processor's commit (synchronous: it returns once the broker has the offsets)."""
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
    except KafkaException as err:
        raise KafkaError(f"offset commit failed: {err}", bootstrap=bootstrap) from err


class Rebalance:
    """The consumer's rebalance callbacks (run inside ``consume()``, on the worker thread)
    for one Processor."""

    def __init__(self, proc: Processor, metrics: StreamMetrics, progress: Progress) -> None:
        self.proc, self.metrics, self.progress = proc, metrics, progress

    def on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        committed = consumer.committed(tps, timeout=30)
        offsets = {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else -1) for tp in committed
        }
        take_over(self.proc, offsets, self.progress)

    def on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        hand_over(self.proc, [(tp.topic, tp.partition) for tp in tps], self.metrics, self.progress)

    def on_lost(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        self.proc.drop([(tp.topic, tp.partition) for tp in tps])
        self.progress.assigned = len(self.proc.parts)
        log.warning(
            "lost %d partition(s); their uncommitted work is redone by the next owner", len(tps)
        )


class Cadence:
    """The micro-batch cap: small while caught up (the visibility cadence: a Redis call of a
    few ms, so a live event never waits behind a long one), doubled by every full batch up to
    the catch-up size (bigger calls aggregate more per key: throughput while behind), back to
    small as soon as a batch comes back short (the backlog is drained). Commits keep their
    own cadence (the Parquet flush), whatever the batch size."""

    def __init__(self, small: int, big: int) -> None:
        self.small, self.big = min(small, big), big
        self.events = self.small

    def update(self, got: int) -> None:
        self.events = min(2 * self.events, self.big) if got >= self.events else self.small


class StreamWorker(Worker):
    """Run with :meth:`run` in a thread of its own; stop with :meth:`stop`."""

    def run(self) -> Progress:
        s = self.settings
        consumer = Consumer(consumer_config(s), logger=log)
        try:
            parts = build_parts(
                s,
                metrics=self.metrics,
                stop=self.stop_event,
                totals=self.totals,
                commit=lambda offsets: commit_offsets(consumer, offsets, s.kafka.bootstrap),
            )
        except BaseException:
            consumer.close()
            raise
        proc = parts.processor
        try:
            bootstrap_catalog(parts.catalog, s, self.metrics, self.stop_event)
            freeze_heap()
            rebalance = Rebalance(proc, self.metrics, self.progress)
            consumer.subscribe(
                list(event_topics(s)),
                on_assign=rebalance.on_assign,
                on_revoke=rebalance.on_revoke,
                on_lost=rebalance.on_lost,
            )
            self._loop(consumer, parts)
            proc.flush()  # graceful stop: everything processed becomes durable and committed
        except Stopped:
            log.warning("stopped while a sink was down; uncommitted work will be redone")
        finally:
            proc.close()
            consumer.close()
            parts.close()
        return self.progress

    def _loop(self, consumer: Consumer, parts: Parts) -> None:
        s, proc = self.settings, parts.processor
        batch_s = s.stream.redis_batch_ms / 1000
        cap = Cadence(s.stream.redis_batch_min_events, s.stream.redis_batch_events)
        next_tick = 0.0
        tracing = loop_trace.enabled()
        tr: LoopTrace | None = None
        last: LoopTrace | None = None  # the batch whose Redis call is in flight
        while not self.stop_event.is_set():
            if tracing:
                tr = LoopTrace(cap=cap.events, start=time.perf_counter())
                tr.prev_end = last.end if last else 0.0
            msgs: list[Message] = consumer.consume(cap.events, batch_s)
            if self.until_caught_up and len(msgs) < cap.events:
                # A short batch may be the last one: look at the lag now rather than at the
                # next 1 s tick, which made a drain's end up to a second late (a 3 s drain
                # of 300,000 events ended at 3 or 4 s by the tick's phase: bench/streams.py
                # read 100k or 75k events/s, run by run). Cheap: cached watermarks.
                next_tick = 0.0
            cap.update(len(msgs))
            if msgs:
                if tr is not None:
                    _note_batch(tr, msgs)
                by_tp: defaultdict[TP, list[RawRecord]] = defaultdict(list)
                for m in msgs:
                    if err := m.error():
                        if err.code() == INCONSISTENT_GROUP_PROTOCOL:  # the Faust engine's group
                            raise EngineConflict(group_id(s), "confluent")
                        log.warning("consumer: %s", err)
                        continue
                    # A message without error has its topic, partition and offset (the
                    # stubs say Optional for all messages); no check in the hot loop.
                    by_tp[(m.topic(), m.partition())].append(  # type: ignore[index]
                        (m.offset(), m.key(), m.value(), m.timestamp()[1] or None)  # type: ignore[arg-type]
                    )
                proc.trace = tr
                proc.process(by_tp)
                if last is not None:  # its call was waited for by this process()
                    last.emit()
                last = tr
            if tr is not None:
                tr.mark = time.perf_counter()
            parts.catalog.poll()
            if tr is not None:
                tr.flushing = proc.flusher.busy
                tr.lap("catalog")
            proc.poll_flush()
            now = time.monotonic()
            if tr is not None:
                tr.lap("flush")
            if now >= next_tick:
                next_tick = now + 1.0
                self._update_lag(consumer, proc)
                if self.until_caught_up and self.progress.caught_up:
                    return
            if tr is not None:
                tr.lap("lag")
            parts.trending.tick(now, proc.max_event_ts)
            if tr is not None:
                tr.end = tr.lap("trending")
                if last is not tr and last is not None:
                    last.end = tr.end  # an empty iteration: the next gap starts here
                proc.trace = None

    def _update_lag(self, consumer: Consumer, proc: Processor) -> None:
        total = 0
        for (topic, p), st in list(proc.parts.items()):
            tp = TopicPartition(topic, p)
            try:
                # The high watermark comes with every fetch response; ask the broker only
                # when none has arrived yet.
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    low, high = consumer.get_watermark_offsets(tp, timeout=5)
            except KafkaException as err:
                log.debug("watermarks of %s[%d]: %s", topic, p, err)
                self.progress.lag, self.progress.caught_up = -1, False
                return
            pos = st.next_offset if st.next_offset >= 0 else low
            lag = max(0, high - max(pos, low))
            self.metrics.lag.labels(topic, str(p)).set(lag)
            total += lag
        note_lag(self.progress, total, proc, until_caught_up=self.until_caught_up)


def _note_batch(tr: LoopTrace, msgs: list[Message]) -> None:
    """The trace's view of a consumed batch: sizes per partition, oldest / newest record."""
    tr.consumed, tr.consumed_wall, tr.n = time.perf_counter(), time.time(), len(msgs)
    stamps = [ts for m in msgs if (ts := m.timestamp()[1]) > 0]
    if stamps:
        tr.oldest_ms, tr.newest_ms = min(stamps), max(stamps)
    for m in msgs:
        p = m.partition() or 0
        tr.parts[p] = tr.parts.get(p, 0) + 1
