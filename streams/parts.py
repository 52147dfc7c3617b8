"""What both stream engines are made of -- the confluent-kafka loop (:mod:`streams.worker`)
and the Faust agent (:mod:`streams.faust_worker`): the sinks, the catalog reader, the
Processor and the trending refresher, built by :func:`build_parts` as one value, and the
steps both engines take the same way (a partition handed over, the lag turned into
progress). An engine composes these; neither inherits from the other.
"""

from __future__ import annotations

import gc
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import KafkaException

from core.config import Settings
from core.errors import KafkaError
from core.kafka import ensure_topics
from core.storage import open_store
from schemas.catalog import ItemRecord
from schemas.events import EVENT_TYPES
from schemas.redis_keys import TRENDING_HALF_LIFE_H, TRENDING_HOURS, RedisKeys
from streams.catalog import Catalog
from streams.dead_letters import DeadLetterSender
from streams.features import trending_plan
from streams.metrics import StreamMetrics
from streams.processor import Processor
from streams.redis_sink import RedisSink
from streams.retry import Stopped, retry
from streams.snapshots import SnapshotWriter
from streams.state import TP, Totals

log = logging.getLogger(__name__)


def group_id(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}.{settings.stream.app_id}"


def event_topics(settings: Settings) -> dict[str, str]:
    """Full topic name -> event type."""
    return {settings.topic(c.TOPIC): name for name, c in EVENT_TYPES.items()}


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


class Worker(ABC):
    """What callers of either engine use: run it in a thread of its own, stop it from
    another; ``progress`` and ``totals`` may be read meanwhile. Holds the state both engines
    keep the same way; each engine brings its own :meth:`run`."""

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
        self.totals = Totals()

    def stop(self) -> None:
        self.stop_event.set()

    @abstractmethod
    def run(self) -> Progress: ...


class Trending:
    """The trending set, recomputed off the loop (5-30 ms, 100+ ms the first time: a stall
    of the loop) every ``interval_s``; a round is skipped while the previous one runs."""

    def __init__(self, redis: RedisSink, *, cap: int, interval_s: float) -> None:
        self.redis, self.cap, self.interval_s = redis, cap, interval_s
        self._pool: ThreadPoolExecutor | None = None
        self._job: Future[None] | None = None
        self._next = 0.0

    def tick(self, now: float, ref_epoch: float) -> None:
        """``now``: monotonic seconds; ``ref_epoch``: the newest event time (0: none yet)."""
        if now < self._next or not ref_epoch:
            return
        self._next = now + self.interval_s
        if self._job is not None and not self._job.done():
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="streams-trending")
        plan = trending_plan(self.redis.keys, ref_epoch, TRENDING_HOURS, TRENDING_HALF_LIFE_H)
        self._job = self._pool.submit(self._recompute, plan)

    def _recompute(self, plan: list[tuple[str, float]]) -> None:
        try:
            self.redis.recompute_trending(plan, self.cap)
        except Exception as err:  # derived data: the next round recomputes it
            log.debug("trending not updated: %s", err)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool, self._job = None, None


@dataclass(frozen=True)
class Parts:
    redis: RedisSink
    dead_letters: DeadLetterSender
    catalog: Catalog
    processor: Processor
    trending: Trending

    def close(self) -> None:
        """Close everything but the processor, which the engine closes first (its last
        flush may still commit through the engine's consumer)."""
        self.catalog.close()
        self.dead_letters.close()
        self.trending.close()
        self.redis.close()


def build_parts(
    settings: Settings,
    *,
    metrics: StreamMetrics,
    stop: threading.Event,
    totals: Totals,
    commit: Callable[[dict[TP, int]], None],
) -> Parts:
    """The topics ensured, the sinks opened, the catalog reader and the Processor (which
    commits through ``commit`` once its work is durable)."""
    s = settings
    ensure_topics(s.kafka)
    redis = RedisSink.from_settings(s.redis, s.kafka)
    writer = SnapshotWriter(open_store(s.storage), s.stream.parquet_compression)
    dead_letters = DeadLetterSender(s.kafka, s.stream.dead_letter_max_bytes)

    def write_catalog(items: list[ItemRecord]) -> None:
        retry(
            lambda: redis.write_catalog(items),
            sink="redis",
            metrics=metrics,
            stop=stop,
            max_backoff_s=s.stream.retry_max_s,
        )

    catalog = Catalog(s.kafka, s.stream.app_id, on_items=write_catalog)
    processor = Processor(
        stream=s.stream,
        online_eval=s.online_eval,
        keys=RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions),
        event_types=event_topics(s),
        redis=redis,
        writer=writer,
        dead_letters=dead_letters,
        genres=catalog.genres,
        commit=commit,
        metrics=metrics,
        stop=stop,
        totals=totals,
    )
    trending = Trending(redis, cap=s.stream.trending_cap, interval_s=s.stream.trending_interval_s)
    return Parts(redis, dead_letters, catalog, processor, trending)


def bootstrap_catalog(
    catalog: Catalog, settings: Settings, metrics: StreamMetrics, stop: threading.Event
) -> None:
    # Fresh topics may not have a leader for a moment: retry, as for any sink.
    retry(
        catalog.bootstrap,
        sink="kafka",
        metrics=metrics,
        stop=stop,
        max_backoff_s=settings.stream.retry_max_s,
    )


def hand_over(
    proc: Processor, tps: Sequence[TP], metrics: StreamMetrics, progress: Progress
) -> None:
    """Partitions revoked: commit what is durable (the next owner replays the rest), then
    forget them."""
    metrics.rebalances.labels("revoke").inc()
    try:
        proc.flush()
    except Stopped:
        pass
    except (KafkaException, KafkaError) as err:
        log.warning("commit on revoke failed, the next owner replays: %s", err)
    proc.drop(list(tps))
    progress.assigned = len(proc.parts)
    log.info("revoked %d partition(s)", len(tps))


def take_over(proc: Processor, committed: Mapping[TP, int], progress: Progress) -> None:
    if committed:  # assign() waits for a Redis call in flight: not for nothing
        proc.assign(committed)
    progress.assigned = len(proc.parts)
    log.info("assigned %d partition(s)", len(proc.parts))


def note_lag(progress: Progress, total: int, proc: Processor, *, until_caught_up: bool) -> None:
    """Record the total lag; caught up = no lag and nothing left uncommitted."""
    progress.lag = total
    pending = any(st.pending for st in proc.parts.values())
    if total == 0 and pending and until_caught_up:
        proc.flush()  # caught up: make it durable now rather than at the next interval
        pending = False
    progress.caught_up = bool(proc.parts) and total == 0 and not pending
