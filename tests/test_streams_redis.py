"""The Redis apply on the real Redis: one script call per partition number of a micro-batch
(one hash slot), all-or-nothing with the watermarks of its partitions, and the caller's
resend of what is left after a replay or a race with another writer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import redis

from core.config import Settings
from schemas.events import RateEvent, WatchEvent
from schemas.redis_keys import RedisKeys
from streams.features import Limits, TtlTracker, compute_deltas, to_payload
from streams.metrics import StreamMetrics
from streams.redis_apply import RedisApplier, RedisWork
from streams.redis_sink import (
    APPLIED,
    CONFLICT,
    NOT_APPLIED,
    SKIPPED,
    PartitionRange,
    RedisSink,
)
from streams.retry import retry
from streams.state import PartitionState
from tests.support.redis_view import item_stats, pop_all, user_hash

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
    sink = RedisSink(s.redis.url, RedisKeys(s.redis.key_prefix))
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
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    keys = RedisKeys(s.redis.key_prefix)
    n0 = int(user_hash(r, keys, "u0").get("n_watch", 0))
    n1 = int(user_hash(r, keys, "u1").get("n_watch", 0))
    return n0, n1, pop_all(r, keys).get("m1", 0.0)


def test_partitions_are_applied_together_and_never_twice(stack: Settings, settings: Settings):
    app, sink = applier(settings)
    try:
        a, b = events(0, range(0, 10)), events(1, range(0, 5))
        app.submit([a, b])
        app.wait()
        assert (a.st.redis_wm, b.st.redis_wm) == (9, 4)
        assert counts(settings) == (10, 5, 15.0)  # pop:all summed over both partitions
        assert sink.watermarks("t.watch", [0, 1]) == {0: 9, 1: 4}
        # Each partition's state is in its own slot.
        r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
        keys = RedisKeys(settings.redis.key_prefix)
        assert r.hget(keys.slot(1).user_stats("u1"), "n_watch") == "5"
        assert r.zscore(keys.slot(0).pop_all, "m1") == 10.0

        # A replay by a worker that does not know the watermarks: refused as a whole.
        again = sink.apply([PartitionRange("t.watch", 0, 0, 9)], b"{}")
        assert [(r.status, r.watermark) for r in again] == [(SKIPPED, 9)]
        # Partition 0 of two topics is one call: all or nothing.
        both = sink.apply(
            [PartitionRange("t.watch", 0, 5, 14), PartitionRange("t.rate", 0, 0, 4)], b"{}"
        )
        assert [(r.status, r.watermark) for r in both] == [(CONFLICT, 9), (NOT_APPLIED, -1)]
        assert counts(settings) == (10, 5, 15.0)
        with pytest.raises(ValueError, match="one partition number"):
            sink.apply(
                [PartitionRange("t.watch", 0, 5, 9), PartitionRange("t.watch", 1, 5, 9)], b"{}"
            )

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


def resent(partition: int, offsets: range, ids: list[str]) -> RedisWork:
    """A partition's batch whose events carry the given ids (same user and item)."""
    st = PartitionState("t.watch", partition, "watch", committed=-1)
    evs = [WatchEvent(event_id=i, user_id="u0", item_id="m1", ts=T0) for i in ids]
    return RedisWork(st, offsets[0], offsets[-1], evs, list(offsets), [None] * len(evs))


def test_a_resent_event_id_at_a_new_offset_is_counted_once(stack: Settings, settings: Settings):
    app, sink = applier(settings)
    app.dedupe_window = 10  # ids are remembered for 10 offsets of their partition (5-buckets)
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    keys = RedisKeys(settings.redis.key_prefix)
    try:
        first = resent(0, range(0, 5), [f"e{o}" for o in range(5)])
        app.apply([first])
        assert counts(settings)[0] == 5
        # Offsets 5..9: e1 and e3 re-sent by the producer, x7 twice in the same batch.
        again = resent(0, range(5, 10), ["e1", "e3", "x7", "x7", "x9"])
        again.st = first.st
        app.apply([again])
        assert counts(settings) == (7, 0, 7.0)  # x7 and x9 only, in every counter
        assert item_stats(r, keys, "m1")["n_watch"] == 7
        assert sum(int(v) for v in user_hash(r, keys, "u0", "genres").values()) == 7
        assert again.dropped == {5, 6, 8}  # the offsets not counted (also left out of the join)
        assert sink.watermarks("t.watch", [0]) == {0: 9}  # the range is done all the same
        # Another partition has its own ids: the same id there is a different event.
        other = resent(1, range(0, 1), ["e1"])
        app.apply([other])
        assert r.hget(keys.slot(1).user_stats("u0"), "n_watch") == "1" and not other.dropped
        # (counts() reads u0 where partition 0 keeps it: 7 from here on, plus what follows)
        # The partition moves on: buckets three behind the current one are deleted.
        for start in range(10, 40, 5):
            more = resent(0, range(start, start + 5), [f"y{o}" for o in range(start, start + 5)])
            more.st = first.st
            app.apply([more])
        assert counts(settings)[0] == 7 + 30
        seen = sorted(r.scan_iter(f"{settings.redis.key_prefix}:{{p0}}:seen:t.watch:0:*"))
        assert seen == [keys.slot(0).seen_ids("t.watch", 0, b) for b in (5, 6, 7)]
        assert 24 * 3600 < r.ttl(seen[-1]) <= 7 * 24 * 3600
        # Past the window an id is forgotten (the documented bound): counted again.
        late = resent(0, range(40, 41), ["e0"])
        late.st = first.st
        app.apply([late])
        assert counts(settings)[0] == 7 + 30 + 1 and not late.dropped
    finally:
        app.close()
        sink.close()


def test_dedupe_off_counts_every_offset(stack: Settings, settings: Settings):
    app, sink = applier(settings)  # dedupe_window 0: per-offset idempotence only
    try:
        app.apply([resent(0, range(0, 3), ["e0", "e0", "e0"])])
        assert counts(settings)[0] == 3
        r = redis.Redis.from_url(settings.redis.url)
        assert not list(r.scan_iter(f"{settings.redis.key_prefix}:*seen:*"))
    finally:
        app.close()
        sink.close()


def test_a_users_history_keeps_its_cap_and_the_ratings_of_what_it_keeps(
    stack: Settings, settings: Settings
):
    keys = RedisKeys(settings.redis.key_prefix)
    sink = RedisSink(settings.redis.url, keys)
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    offset = iter(range(100))

    def send(*evs: WatchEvent | RateEvent) -> None:
        o = next(offset)
        doc = to_payload(compute_deltas(evs), keys, Limits(recent_cap=3), 1.0)
        assert sink.apply([PartitionRange("t.watch", 0, o, o)], doc)[0].status == APPLIED

    def at(i: int, item: str, rating: float | None = None) -> WatchEvent | RateEvent:
        ts = T0 + timedelta(seconds=i)
        if rating is None:
            return WatchEvent(event_id=f"c{i}", user_id="c", item_id=item, ts=ts)
        return RateEvent(event_id=f"c{i}", user_id="c", item_id=item, rating=rating, ts=ts)

    history = keys.user_recent("c")
    try:
        # A new user's first batch brings more items than the cap: trimmed at once.
        send(at(0, "m0", 4.0), *(at(i, f"m{i}") for i in range(1, 5)), at(5, "m4", 2.0))
        assert r.zrange(history, 0, -1) == ["m2", "m3", "m4"]
        assert r.hgetall(keys.user_ratings("c")) == {"m4": "2"}
        # The stats evicted, the history not: the user looks new, its two items are added
        # without a count (an overshoot of one batch), trimmed by its next batch's item.
        r.delete(keys.user_stats("c"))
        send(at(6, "m6"), at(7, "m7"))
        assert r.zcard(history) == 5
        send(at(8, "m8"))
        assert r.zrange(history, 0, -1) == ["m6", "m7", "m8"]
        assert r.hgetall(keys.user_ratings("c")) == {}
    finally:
        sink.close()


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_a_producer_resending_an_event_is_counted_once_end_to_end(topics: Settings, engine: str):
    """Through Kafka: the same event produced twice lands at two offsets; Redis counts it
    once, the snapshots keep both rows (the log) and the trainer reads it once."""
    import orjson

    from core.kafka import EventProducer
    from core.storage import open_store
    from streams import run_worker
    from streams.snapshots import read_snapshots
    from training.data import read_events

    s = topics.with_sections(stream={"flush_interval_s": 1.0, "engine": engine})
    doc = {"event_id": "same-1", "user_id": "u9", "item_id": "m1", "ts": T0.isoformat()}
    other = {**doc, "event_id": "other-2"}
    with EventProducer(s.kafka) as p:
        for d in (doc, other, doc):  # a retry re-sends the first event after the second
            p.produce(s.topic("watch"), orjson.dumps({"event_type": "watch", **d}), b"u9")
        p.flush()
    summary = run_worker(s, until_caught_up=True, metrics_port=-1, handle_signals=False)
    assert summary.processed == 3
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    keys = RedisKeys(s.redis.key_prefix)
    # Keyed by user with murmur2: the state is in the slot serving looks in.
    assert r.hget(keys.user_slot("u9").user_stats("u9"), "n_watch") == "2"
    assert pop_all(r, keys) == {"m1": 2.0}
    store = open_store(s.storage)
    rows = read_snapshots(store, "watch").column("event_id").to_pylist()
    assert sorted(rows) == ["other-2", "same-1", "same-1"]
    events, _ = read_events(store)
    assert sorted(events.column("event_id").to_pylist()) == ["other-2", "same-1"]
