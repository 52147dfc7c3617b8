"""The consumer loop of a stream worker (one thread): Kafka -> Processor, rebalances, lag,
trending and the catalog.

Events are consumed with confluent-kafka (librdkafka) in batches, offsets are committed only
by :meth:`Processor.flush`, never automatically. Workers sharing the group id
``<topic_prefix>.<stream_app_id>`` share the event topics' partitions.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from core.config import Settings
from core.errors import KafkaError
from core.kafka import ensure_topics
from core.storage import open_store
from schemas.events import EVENT_TYPES
from schemas.redis_keys import TRENDING_HALF_LIFE_H, TRENDING_HOURS
from streams.catalog import Catalog
from streams.dead_letters import DeadLetterSender
from streams.features import trending_plan
from streams.metrics import StreamMetrics
from streams.processor import Processor
from streams.redis_sink import RedisSink
from streams.retry import Stopped, retry
from streams.snapshots import SnapshotWriter
from streams.state import TP

log = logging.getLogger(__name__)


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}.{settings.stream_app_id}"


def consumer_config(settings: Settings) -> dict:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id(settings),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "roundrobin",
        "session.timeout.ms": settings.stream_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.stream_session_timeout_ms // 5),
        # Holding while Redis or the store is down must not get us kicked out of the group.
        "max.poll.interval.ms": settings.stream_max_poll_interval_ms,
        "fetch.wait.max.ms": 50,
        "queued.min.messages": 200_000,
    }


# Collect every 50,000 net allocations, not 700: the hot path makes few cycles, and the
# default collected ~1,000 times per 200,000 events (0.5 s of 6 s, pauses up to 80 ms).
GC_THRESHOLDS = (50_000, 20, 100)


def freeze_heap() -> None:
    """Move everything alive after start-up (modules, schemas, the catalog) out of the
    garbage collector's reach (full collections paused the loop 30-140 ms every few seconds
    under load) and raise the collection thresholds (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass
class Progress:
    assigned: int = 0
    lag: int = -1  # -1: unknown yet
    caught_up: bool = False


class StreamWorker:
    """Run with :meth:`run` in a thread of its own; stop with :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        metrics: StreamMetrics | None = None,
        *,
        until_caught_up: bool = False,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or StreamMetrics()
        self.until_caught_up = until_caught_up
        self.stop_event = threading.Event()
        self.progress = Progress()
        self.event_types = {settings.topic(c.TOPIC): name for name, c in EVENT_TYPES.items()}
        self._consumer: Consumer | None = None
        self.processor: Processor | None = None
        self._trending_pool: ThreadPoolExecutor | None = None
        self._trending_job: Future[None] | None = None

    def stop(self) -> None:
        self.stop_event.set()

    # --- rebalance callbacks (run inside consume(), on the worker thread) -------------
    def _on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        committed = consumer.committed(tps, timeout=30)
        offsets = {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else -1) for tp in committed
        }
        log.info("assigned %d partition(s)", len(offsets))
        assert self.processor is not None
        self.processor.assign(offsets)
        self.progress.assigned = len(self.processor.parts)

    def _on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        assert self.processor is not None
        try:
            self.processor.flush()  # hand over cleanly: commit what is durable
        except Stopped:
            pass
        except (KafkaException, KafkaError) as err:
            log.warning("commit on revoke failed, the next owner replays: %s", err)
        self.processor.drop([(tp.topic, tp.partition) for tp in tps])
        self.progress.assigned = len(self.processor.parts)
        log.info("revoked %d partition(s)", len(tps))

    def _on_lost(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        assert self.processor is not None
        self.processor.drop([(tp.topic, tp.partition) for tp in tps])
        log.warning(
            "lost %d partition(s); their uncommitted work is redone by the next owner", len(tps)
        )

    def _commit(self, offsets: dict[TP, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as err:
            raise KafkaError(
                f"offset commit failed: {err}", bootstrap=self.settings.kafka_bootstrap
            ) from err

    # --- the loop ---------------------------------------------------------------------
    def _build(
        self, commit: Callable[[dict[TP, int]], None]
    ) -> tuple[RedisSink, DeadLetterSender, Catalog, Processor]:
        """The sinks, the catalog reader and the Processor (shared by both engines)."""
        s = self.settings
        ensure_topics(s)
        redis = RedisSink.from_settings(s)
        writer = SnapshotWriter(
            open_store(s.storage, endpoint_url=s.s3_endpoint_url), s.stream_parquet_compression
        )
        dead_letters = DeadLetterSender(s)
        catalog = Catalog(s, on_items=lambda items: self._write_catalog(redis, items))
        self.processor = proc = Processor(
            settings=s,
            event_types=self.event_types,
            redis=redis,
            writer=writer,
            dead_letters=dead_letters,
            genres=catalog.genres,
            commit=commit,
            metrics=self.metrics,
            stop=self.stop_event,
        )
        return redis, dead_letters, catalog, proc

    def _bootstrap_catalog(self, catalog: Catalog) -> None:
        # Fresh topics may not have a leader for a moment: retry, as for any sink.
        retry(
            catalog.bootstrap,
            sink="kafka",
            metrics=self.metrics,
            stop=self.stop_event,
            max_backoff_s=self.settings.stream_retry_max_s,
        )

    def run(self) -> Progress:
        s = self.settings
        redis, dead_letters, catalog, proc = self._build(self._commit)
        self._consumer = consumer = Consumer(consumer_config(s), logger=log)
        try:
            self._bootstrap_catalog(catalog)
            freeze_heap()
            consumer.subscribe(
                list(self.event_types),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._loop(consumer, proc, catalog, redis)
            proc.flush()  # graceful stop: everything processed becomes durable and committed
        except Stopped:
            log.warning("stopped while a sink was down; uncommitted work will be redone")
        finally:
            proc.close()
            consumer.close()
            catalog.close()
            dead_letters.close()
            self._close_trending()
            redis.close()
        return self.progress

    def _loop(
        self, consumer: Consumer, proc: Processor, catalog: Catalog, redis: RedisSink
    ) -> None:
        s = self.settings
        batch_n, batch_s = s.stream_redis_batch_events, s.stream_redis_batch_ms / 1000
        next_tick = next_trending = 0.0
        while not self.stop_event.is_set():
            msgs = consumer.consume(batch_n, batch_s)
            if msgs:
                by_tp: defaultdict[TP, list] = defaultdict(list)
                for m in msgs:
                    if m.error():
                        log.warning("consumer: %s", m.error())
                        continue
                    by_tp[(m.topic(), m.partition())].append(
                        (m.offset(), m.key(), m.value(), m.timestamp()[1] or None)
                    )
                proc.process(by_tp)
            catalog.poll()
            proc.poll_flush()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                self._update_lag(consumer, proc)
                if self.until_caught_up and self.progress.caught_up:
                    return
            if now >= next_trending and proc.max_event_ts:
                next_trending = now + s.stream_trending_interval_s
                self._trending(redis, proc.max_event_ts)

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
        self._caught_up(total, proc)

    def _caught_up(self, total: int, proc: Processor) -> None:
        self.progress.lag = total
        pending = any(st.pending for st in proc.parts.values())
        if total == 0 and pending and self.until_caught_up:
            proc.flush()  # caught up: make it durable now rather than at the next interval
            pending = False
        self.progress.caught_up = bool(proc.parts) and total == 0 and not pending

    def _trending(self, redis: RedisSink, ref_epoch: float) -> None:
        """Recompute the trending set off the loop (5-30 ms, 100+ ms the first time: a stall
        of the loop); skipped while the previous round still runs."""
        if self._trending_job is not None and not self._trending_job.done():
            return
        if self._trending_pool is None:
            self._trending_pool = ThreadPoolExecutor(1, thread_name_prefix="streams-trending")
        plan = trending_plan(redis.keys, ref_epoch, TRENDING_HOURS, TRENDING_HALF_LIFE_H)
        cap = self.settings.stream_trending_cap
        self._trending_job = self._trending_pool.submit(self._recompute, redis, plan, cap)

    @staticmethod
    def _recompute(redis: RedisSink, plan: list[tuple[str, float]], cap: int) -> None:
        try:
            redis.recompute_trending(plan, cap)
        except Exception as err:  # derived data: the next round recomputes it
            log.debug("trending not updated: %s", err)

    def _close_trending(self) -> None:
        if self._trending_pool is not None:
            self._trending_pool.shutdown(wait=True)
            self._trending_pool, self._trending_job = None, None

    def _write_catalog(self, redis: RedisSink, items: list) -> None:
        retry(
            lambda: redis.write_catalog(items),
            sink="redis",
            metrics=self.metrics,
            stop=self.stop_event,
            max_backoff_s=self.settings.stream_retry_max_s,
        )
