"""The Redis cadence off the consumer thread: each micro-batch's features go to Redis in one
script call (:mod:`streams.redis_sink`) on a thread of its own. The call is prepared
(aggregated, encoded) on the consumer thread while the previous call runs in Redis, then
sent once that one is done: one call is in flight at a time, so batches reach Redis in
order, and Redis and the worker's Python work overlap. A call prepared before the
watermarks it depends on were known (the first batch after a crash or a rebalance) is
prepared again from what is left above them.

A micro-batch is applied as one call per partition number (the events of partition N of
every topic): each call's keys share one hash slot (:mod:`schemas.redis_keys`), which a
Redis Cluster requires, and each moves only its own partitions' watermarks, so exactly-once
holds call by call.

Re-sent event ids (:mod:`streams.dedupe`) are dropped before the features are aggregated:
repeats within the batch here, ids applied at earlier offsets when the script reports them.

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
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import Protocol, TypeVar

from schemas.events import Event
from schemas.redis_keys import RedisKeys
from streams.dedupe import dedupe_plan, repeats
from streams.fast_decode import EventRecord
from streams.features import Limits, TtlTracker, compute_deltas_parts, to_payload
from streams.metrics import StreamMetrics
from streams.redis_sink import APPLIED, CONFLICT, DUPLICATE, SKIPPED, PartitionRange, RedisSink
from streams.state import PartitionState

log = logging.getLogger(__name__)
T = TypeVar("T")

FRESHNESS_SAMPLES = 64
_event_id = attrgetter("event_id")  # over map(): no Python frame per event


class Retry(Protocol):
    """The processor's retry: runs ``fn`` until it succeeds, backing off while ``sink`` is
    down (and giving up only when the worker stops)."""

    def __call__(self, fn: Callable[[], T], sink: str, /) -> T: ...


@dataclass
class RedisWork:
    """A partition's share of a micro-batch: its good events and their offsets, the
    batch's offset range (dead letters included) and the events' producer timestamps.
    ``dropped`` collects the offsets of events the apply did not count because their id was
    applied before (or came earlier in the batch); trimmed copies share it with the
    original."""

    st: PartitionState
    first: int
    last: int
    events: list[Event | EventRecord]  # decoded by the fast path (watch, rate) or pydantic
    offsets: list[int]
    produced_ms: list[float | None]
    dropped: set[int] = field(default_factory=set)

    def without(self, drop: set[int]) -> RedisWork:
        """A copy without the events at positions ``drop`` (same offset range)."""
        keep = [j for j in range(len(self.events)) if j not in drop]
        return RedisWork(
            self.st,
            self.first,
            self.last,
            [self.events[j] for j in keep],
            [self.offsets[j] for j in keep],
            [self.produced_ms[j] for j in keep],
            self.dropped,
        )


def by_partition(work: list[RedisWork]) -> dict[int, list[RedisWork]]:
    """``work`` grouped by partition number, in order: one group, one script call."""
    groups: dict[int, list[RedisWork]] = {}
    for w in work:
        groups.setdefault(w.st.partition, []).append(w)
    return groups


@dataclass
class _Call:
    """A prepared script call: its ranges, payload and the keys whose EXPIRE it sends."""

    ranges: list[PartitionRange]
    payload: bytes
    refreshed: list[str]
    max_ts: float


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
        retry: Retry,
        dedupe_window: int = 0,
    ) -> None:
        self.redis, self.keys, self.limits, self.genres = redis, keys, limits, genres
        self.dedupe_window = dedupe_window  # 0: per-offset idempotence only
        self.ttls, self.metrics, self._retry = ttls, metrics, retry
        self.max_event_ts = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[None] | None = None

    def submit(self, work: list[RedisWork], then: Callable[[], object] | None = None) -> None:
        """Prepare the call for ``work`` (aggregating and encoding on the caller's thread,
        while the previous call runs in Redis), wait for the call in flight (raising its
        error), then start this one; ``then`` runs on the Redis thread once ``work`` is
        applied (:meth:`wait` waits for it too)."""
        groups = by_partition(self._dedupe(work))
        calls = {p: self._prepare(g) for p, g in groups.items()}
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="streams-redis")
        self._future = self._pool.submit(self._apply_then, groups, calls, then)

    def _apply_then(
        self,
        groups: dict[int, list[RedisWork]],
        calls: dict[int, _Call],
        then: Callable[[], object] | None,
    ) -> None:
        self._apply_all(groups, calls)
        if then is not None:
            then()

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
        self._apply_all(by_partition(self._dedupe(work)), {})

    def _apply_all(self, groups: dict[int, list[RedisWork]], calls: dict[int, _Call]) -> None:
        """Send every partition number's call at once (one round trip per master), then
        settle each; a partition whose call did not apply whole goes round again alone."""
        rounds: list[tuple[list[RedisWork], _Call]] = []
        for partition, parts in groups.items():
            live = [self._above_watermark(w) for w in parts]
            call = calls.get(partition)
            if call is None or any(a is not w for a, w in zip(live, parts, strict=True)):
                # Prepared before the watermarks were known (replay after a crash, a
                # rebalance): aggregate again what is left.
                parts = [w for w in live if w is not None]
                call = self._prepare(parts) if parts else None
            if call is not None:
                rounds.append((parts, call))
        while rounds:
            for _, call in rounds:
                self.max_event_ts = max(self.max_event_ts, call.max_ts)
            t0 = time.perf_counter()
            batch = [(c.ranges, c.payload) for _, c in rounds]
            results = self._retry(partial(self.redis.apply_many, batch), "redis")
            applied_at = time.time()
            self.metrics.redis_seconds.observe(time.perf_counter() - t0)
            again = [
                (left, self._prepare(left))
                for (parts, call), res in zip(rounds, results, strict=True)
                if (left := self._settle(parts, call, res, applied_at))
            ]
            rounds = again

    def _settle(
        self, parts: list[RedisWork], call: _Call, results: list, applied_at: float
    ) -> list[RedisWork]:
        """Move the watermarks by a call's results; returns what must be sent again."""
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
                if trimmed is not None and res.status == DUPLICATE:
                    trimmed = self._drop_ids(trimmed, res.duplicates)
                if trimmed is not None:
                    again.append(trimmed)
        if all(res.status == APPLIED for res in results):
            self.ttls.confirm(call.refreshed)
            self.metrics.redis_batch_events.observe(sum(len(w.events) for w in parts))
        return again

    def _dedupe(self, work: list[RedisWork]) -> list[RedisWork]:
        return [self._drop_repeats(w) for w in work] if self.dedupe_window else work

    def _prepare(self, parts: list[RedisWork]) -> _Call:
        """The call of ``parts``, all of one partition number (one slot)."""
        keys = self.keys.slot(parts[0].st.partition)
        deltas = compute_deltas_parts([w.events for w in parts], self.genres)
        dedupe = None
        if self.dedupe_window:
            dedupe = [
                dedupe_plan(
                    keys,
                    w.st.topic,
                    w.st.partition,
                    list(map(_event_id, w.events)),
                    w.offsets,
                    self.dedupe_window,
                )
                for w in parts
            ]
        refreshed: list[str] = []
        payload = to_payload(
            deltas,
            keys,
            self.limits,
            time.time(),
            fresh=self.ttls,
            refreshed=refreshed,
            dedupe=dedupe,
        )
        ranges = [PartitionRange(w.st.topic, w.st.partition, w.first, w.last) for w in parts]
        return _Call(ranges, payload, refreshed, deltas.max_ts)

    def _drop_repeats(self, w: RedisWork) -> RedisWork:
        """``w`` without events whose id came earlier in the batch."""
        drop = repeats(list(map(_event_id, w.events)))
        return self._dropped(w, drop) if drop else w

    def _drop_ids(self, w: RedisWork, ids: frozenset[str]) -> RedisWork:
        """``w`` without events whose id Redis has seen at an earlier offset."""
        return self._dropped(w, {j for j, e in enumerate(w.events) if e.event_id in ids})

    def _dropped(self, w: RedisWork, drop: set[int]) -> RedisWork:
        w.dropped.update(w.offsets[j] for j in drop)
        self.metrics.events.labels(w.st.event_type, "duplicate_id").inc(len(drop))
        log.debug(
            "%s[%d]: %d re-sent event id(s) not counted again",
            w.st.topic,
            w.st.partition,
            len(drop),
        )
        return w.without(drop)

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
            w.dropped,
        )

    def _observe_freshness(self, applied_at: float, produced_ms: list[float | None]) -> None:
        # A systematic sample (every event of small batches, <= FRESHNESS_SAMPLES of big
        # ones): per-event observations would cost more than the rest.
        step = max(1, len(produced_ms) // FRESHNESS_SAMPLES)
        obs = self.metrics.freshness.observe
        for ts in produced_ms[::step]:
            if ts:
                obs(max(0.0, applied_at - ts / 1000))
