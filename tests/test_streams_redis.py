"""The merged Redis apply on the real Redis: one script call for all partitions of a
micro-batch, all-or-nothing with every partition's watermark, and the caller's resend of
what is left after a replay or a race with another writer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import redis

from core.config import Settings
from schemas.events import WatchEvent
from schemas.redis_keys import RedisKeys
from streams.features import Limits, TtlTracker
from streams.metrics import StreamMetrics
from streams.redis_apply import RedisApplier, RedisWork
from streams.redis_sink import CONFLICT, NOT_APPLIED, SKIPPED, PartitionRange, RedisSink
from streams.retry import retry
from streams.state import PartitionState

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def events(partition: int, offsets: range, item: str = "m1") -> RedisWork:
    st = PartitionState("t.watch", partition, "watch", committed=-1)
    evs = [
        WatchEvent(event_id=f"e{partition}-{o}", user_id=f"u{partition}", item_id=item, ts=T0)
        for o in offsets
    ]
    return RedisWork(st, offsets[0], offsets[-1], evs, list(offsets), [None] * len(evs))


def applier(s: Settings) -> tuple[RedisApplier, RedisSink]:
    sink = RedisSink(s.redis_url, RedisKeys(s.redis_key_prefix))
    metrics = StreamMetrics()
    app = RedisApplier(
        redis=sink,
        keys=sink.keys,
        limits=Limits(),
        genres={"m1": ("Drama",)},
        ttls=TtlTracker(300),
        metrics=metrics,
        retry=lambda fn, name: retry(fn, sink=name, metrics=metrics, stop=threading.Event()),
    )
    return app, sink


def counts(s: Settings) -> tuple[int, int, float]:
    r = redis.Redis.from_url(s.redis_url, decode_responses=True)
    keys = RedisKeys(s.redis_key_prefix)
    n0 = int(r.hget(keys.user_stats("u0"), "n_watch") or 0)
    n1 = int(r.hget(keys.user_stats("u1"), "n_watch") or 0)
    return n0, n1, float(r.zscore(keys.pop_all, "m1") or 0)


def test_partitions_are_applied_together_and_never_twice(stack: Settings, settings: Settings):
    app, sink = applier(settings)
    try:
        a, b = events(0, range(0, 10)), events(1, range(0, 5))
        app.submit([a, b])
        app.wait()
        assert (a.st.redis_wm, b.st.redis_wm) == (9, 4)
        assert counts(settings) == (10, 5, 15.0)  # pop:all aggregated over both partitions
        assert sink.watermarks("t.watch", [0, 1]) == {0: 9, 1: 4}

        # A replay by a worker that does not know the watermarks: refused as a whole.
        again = sink.apply([PartitionRange("t.watch", 0, 0, 9)], b"{}")
        assert [(r.status, r.watermark) for r in again] == [(SKIPPED, 9)]
        both = sink.apply(
            [PartitionRange("t.watch", 0, 5, 14), PartitionRange("t.watch", 1, 5, 9)], b"{}"
        )
        assert [(r.status, r.watermark) for r in both] == [(CONFLICT, 9), (NOT_APPLIED, 4)]
        assert counts(settings) == (10, 5, 15.0)

        # The applier resends only what is new: offsets 10..14 of partition 0, all of 2.
        stale_a = events(0, range(5, 15))  # its state still says redis_wm = -1
        fresh_c = events(2, range(0, 3))
        app.apply([stale_a, fresh_c])
        assert stale_a.st.redis_wm == 14 and fresh_c.st.redis_wm == 2
        assert counts(settings) == (15, 5, 23.0)
        assert sink.watermarks("t.watch", [0, 1, 2]) == {0: 14, 1: 4, 2: 2}
        # And a fully replayed call changes nothing at all.
        app.apply([events(0, range(0, 15)), events(1, range(0, 5))])
        assert counts(settings) == (15, 5, 23.0)
        assert app.max_event_ts == pytest.approx(T0.timestamp())
    finally:
        app.close()
        sink.close()
