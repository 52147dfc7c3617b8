"""The Redis cadence off the consumer thread: each micro-batch's features go to Redis in one
script call (:mod:`streams.redis_sink`) on a thread of its own, while the consumer thread
decodes the next batch. One call is in flight at a time, so batches reach Redis in order.

Commit-after-durable still holds: the Processor waits for the call in flight before it cuts
a flush job (whose offsets get committed), before a rebalance hands partitions over and
before it stops; an error of the call (``Stopped``: the worker stops while Redis is down) is
raised there, on the consumer thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from schemas.events import Event
from schemas.redis_keys import RedisKeys
from streams.features import Limits, TtlTracker, compute_deltas, to_payload
from streams.metrics import StreamMetrics
from streams.redis_sink import APPLIED, CONFLICT, SKIPPED, PartitionRange, RedisSink
from streams.state import PartitionState

log = logging.getLogger(__name__)

FRESHNESS_SAMPLES = 64


@dataclass
class RedisWork:
    """A partition's share of a micro-batch: its good events and their offsets, the
    batch's offset range (dead letters included) and the events' producer timestamps."""

    st: PartitionState
    first: int
    last: int
    events: list[Event]
    offsets: list[int]
    produced_ms: list[float | None]


class RedisApplier:
    def __init__(
        self,
        *,
        redis: RedisSink,
        keys: RedisKeys,
        limits: Limits,
        genres: Mapping[str, Sequence[str]],
        ttls: TtlTracker,
        metrics: StreamMetrics,
        retry: Callable[[Callable[[], object], str], object],
    ) -> None:
        self.redis, self.keys, self.limits, self.genres = redis, keys, limits, genres
        self.ttls, self.metrics, self._retry = ttls, metrics, retry
        self.max_event_ts = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[None] | None = None

    def submit(self, work: list[RedisWork]) -> None:
        """Wait for the call in flight (raising its error), then start this one."""
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="streams-redis")
        self._future = self._pool.submit(self.apply, work)

    def wait(self) -> None:
        if self._future is not None:
            future, self._future = self._future, None
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def apply(self, work: list[RedisWork]) -> None:
        """Apply the partitions' events above their Redis watermarks (blocking)."""
        parts = [w for w in (self._above_watermark(w) for w in work) if w is not None]
        n_events = sum(len(w.events) for w in parts)
        while parts:
            deltas = compute_deltas((e for w in parts for e in w.events), self.genres)
            self.max_event_ts = max(self.max_event_ts, deltas.max_ts)
            refreshed: list[str] = []
            payload = to_payload(
                deltas, self.keys, self.limits, time.time(), fresh=self.ttls, refreshed=refreshed
            )
            ranges = [PartitionRange(w.st.topic, w.st.partition, w.first, w.last) for w in parts]
            t0 = time.perf_counter()
            results = self._retry(lambda r=ranges, p=payload: self.redis.apply(r, p), "redis")
            applied_at = time.time()
            self.metrics.redis_seconds.observe(time.perf_counter() - t0)
            again = []
            for w, res in zip(parts, results, strict=True):
                w.st.redis_wm = max(w.st.redis_wm, res.watermark)
                if res.status == APPLIED:
                    self._observe_freshness(applied_at, w.produced_ms)
                elif res.status != SKIPPED:
                    if res.status == CONFLICT:  # another writer got there first
                        log.warning(
                            "redis watermark of %s[%d] is %d, above this batch's start %d",
                            w.st.topic,
                            w.st.partition,
                            res.watermark,
                            w.first,
                        )
                    trimmed = self._above_watermark(w)
                    if trimmed is not None:
                        again.append(trimmed)
            if all(res.status == APPLIED for res in results):
                self.ttls.confirm(refreshed)
                self.metrics.redis_batch_events.observe(n_events)
                return
            parts = again

    @staticmethod
    def _above_watermark(w: RedisWork) -> RedisWork | None:
        """``w`` without the offsets Redis already has (None: nothing left)."""
        wm = w.st.redis_wm
        if w.last <= wm:
            return None
        if w.first > wm:
            return w
        keep = [i for i, o in enumerate(w.offsets) if o > wm]
        return RedisWork(
            w.st,
            wm + 1,
            w.last,
            [w.events[i] for i in keep],
            [w.offsets[i] for i in keep],
            [w.produced_ms[i] for i in keep],
        )

    def _observe_freshness(self, applied_at: float, produced_ms: list[float | None]) -> None:
        # A systematic sample (every event of small batches, <= FRESHNESS_SAMPLES of big
        # ones): per-event observations would cost more than the rest.
        step = max(1, len(produced_ms) // FRESHNESS_SAMPLES)
        obs = self.metrics.freshness.observe
        for ts in produced_ms[::step]:
            if ts:
                obs(max(0.0, applied_at - ts / 1000))
