"""Unit tests of the stream processor's pure parts (no Kafka, no Redis)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import StorageUnavailable
from core.storage.local import LocalStore
from schemas.redis_keys import RedisKeys
from schemas.snapshots import SnapshotFile, arrow_schema
from streams.decode import decode_batch
from streams.fast_decode import fast_decode
from streams.features import Limits, compute_deltas, to_payload, trending_plan
from streams.metrics import StreamMetrics
from streams.processor import Processor
from streams.snapshots import SnapshotWriter, to_parquet, to_table
from streams.worker import Cadence
from tests.support.events import T0, FakeRedis, rate, watch


def test_decode_batch_splits_good_events_and_dead_letters() -> None:
    bad_field = orjson.loads(watch(2))
    bad_field["item_id"] = "has space"
    newer = orjson.loads(watch(3))
    newer["schema_version"] = 99
    recs = [
        (10, b"u1", watch(1), 1000.0),
        (11, b"u1", b"{not json", 1000.0),
        (12, b"u1", orjson.dumps(bad_field), None),
        (13, b"u1", orjson.dumps(newer), None),
        (14, None, None, None),
        (15, b"u1", rate(1, "u1", "m1", 4.0), None),  # a rate event on the watch topic
        (16, b"u1", watch(4), None),
    ]
    out = decode_batch(recs, event_type="watch", topic="p.watch", partition=3, now=1.0)
    assert [e.event_id for e in out.events] == ["w1", "w4"]
    assert out.offsets == [10, 16]
    assert out.produced_ms == [1000.0, None]
    reasons = {d.source_offset: d.reason for d in out.dead}
    assert set(reasons) == {11, 12, 13, 14, 15}
    assert "not valid JSON" in reasons[11]
    assert "item_id" in reasons[12]
    assert "schema_version" in reasons[13]
    assert "empty" in reasons[14]
    assert "event_type" in reasons[15]
    dl = next(d for d in out.dead if d.source_offset == 11)
    assert dl.value == b"{not json" and dl.source_topic == "p.watch" and dl.source_partition == 3
    headers = dict(dl.headers())
    assert headers["sr-source-offset"] == b"11"


def test_compute_deltas_aggregates_per_key() -> None:
    from streams.decode import decode_one

    evs = [
        decode_one(watch(1, "u1", "m1", T0), "watch"),
        decode_one(watch(2, "u1", "m1", T0 + 10), "watch"),
        decode_one(watch(3, "u2", "m2", T0 + 3600), "watch"),
        decode_one(rate(1, "u1", "m2", 3.5, T0 + 5), "rate"),
        decode_one(rate(2, "u1", "m2", 4.5, T0 + 6), "rate"),
    ]
    d = compute_deltas(evs, {"m1": ["Drama", "War"], "m2": ["Comedy"]})
    u1 = d.users["u1"]
    assert (u1.n_watch, u1.n_rate, u1.rating_sum) == (2, 2, 8.0)
    assert u1.last_active == T0 + 10
    assert u1.recent == {"m1": T0 + 10, "m2": T0 + 6}
    assert u1.ratings == {"m2": 4.5}  # the latest rating wins
    assert u1.genres == {"Drama": 2, "War": 2, "Comedy": 2}
    assert d.items["m1"].n_watch == 2 and d.items["m2"].n_rate == 2
    assert d.pop_all == {"m1": 2, "m2": 3}
    assert sum(d.pop_hour[int(T0 // 3600)].values()) == 4
    assert d.pop_hour[int(T0 // 3600) + 1] == {"m2": 1}
    payload = orjson.loads(to_payload(d, RedisKeys("x"), Limits(recent_cap=7), now=5.0))
    assert payload["cap"] == 7
    users = {u[0]: u for u in payload["u"]}
    assert users["u1"][1:5] == [2, 2, 8.0, T0 + 10]
    assert payload["k"][0] == ["x:user:", ":stats"] and payload["k"][4] == ["x:item:", ":stats"]
    assert payload["a"][0] == "x:pop:all"


def test_trending_plan_decays_by_half_life() -> None:
    keys = RedisKeys("x", partitions=2)
    plan = trending_plan(keys, T0, hours=3, half_life_h=1.0)
    assert [w for _k, w in plan] == [1.0, 0.5, 0.25] * 2  # every partition's buckets
    assert [k for k, _w in plan[::3]] == [keys.slot(0).pop_hour(T0), keys.slot(1).pop_hour(T0)]
    assert plan[1][0] == "x:{p0}:pop:h:" + time.strftime("%Y%m%d%H", time.gmtime(T0 - 3600))


def test_snapshot_table_is_typed_and_named_by_offsets_and_event_times(tmp_path) -> None:
    from streams.decode import decode_one

    # Two event-time days in one batch: one file (the layout is dated by arrival).
    evs = [decode_one(watch(i, t=T0 + i * 20_000), "watch") for i in range(4)]
    store = LocalStore(tmp_path)
    writer = SnapshotWriter(store, "zstd")
    table = to_table("watch", evs, [100, 101, 102, 103], partition=2)
    assert table.schema == arrow_schema("watch")
    # The batch decoder's records (columns transposed in one pass) give the same table.
    recs = [fast_decode(watch(i, t=T0 + i * 20_000), "watch") for i in range(4)]
    assert to_table("watch", recs, [100, 101, 102, 103], partition=2).equals(table)
    arrived = date(2026, 11, 29)
    keys = [
        writer.write("watch", arrived, 2, [table]),
        writer.write(
            "watch", arrived + timedelta(days=1), 2, [to_table("watch", evs[:1], [104], 2)]
        ),
    ]
    assert keys[0] == (
        "events/event_type=watch/arrival_date=2026-11-29/part-p2-o00000000000000000100"
        "-00000000000000000103-t20240501T120000-20240502T044000.parquet"
    )
    metas = [SnapshotFile.parse(k) for k in keys]
    assert [(m.partition, m.first_offset, m.last_offset) for m in metas] == [
        (2, 100, 103),
        (2, 104, 104),
    ]
    first = metas[0]
    assert first.ts_min == datetime.fromtimestamp(T0, UTC)
    assert first.may_hold(None, first.ts_min + timedelta(seconds=1))
    assert not first.may_hold(first.ts_max + timedelta(seconds=1), None)
    assert not first.may_hold(None, first.ts_min)  # [since, until) is half-open
    back = pq.read_table(pa.BufferReader(store.get(keys[0])))
    assert back.column("event_id").to_pylist() == ["w0", "w1", "w2", "w3"]
    assert (
        pq.ParquetFile(pa.BufferReader(store.get(keys[0])))
        .metadata.row_group(0)
        .column(0)
        .compression.lower()
        == "zstd"
    )
    # A file of the layout before arrival dates: parsed (bounded by its event day) and
    # cleaned up like the others.
    legacy = (
        "events/event_type=watch/date=2024-05-01/"
        "part-p2-o00000000000000000105-00000000000000000106.parquet"
    )
    store.put(legacy, to_parquet(to_table("watch", evs[:2], [105, 106], 2)))
    old = SnapshotFile.parse(legacy)
    assert old is not None and old.legacy and old.key == legacy
    assert old.may_hold(datetime(2024, 5, 1, 23, tzinfo=UTC), None)
    assert not old.may_hold(datetime(2024, 5, 2, 0, 0, 1, tzinfo=UTC), None)
    # Rewriting the same batch replaces the file; files at/after the committed offset go.
    writer.write("watch", arrived, 2, [table])
    assert len(store.list("events/")) == 3
    assert writer.remove_uncommitted("watch", 2, committed=104) == [keys[1], legacy]
    assert writer.remove_uncommitted("watch", 1, committed=0) == []
    assert store.list("events/") == [keys[0]]
    assert len(to_parquet(table, "snappy")) > 0


class FlakyWriter(SnapshotWriter):
    def __init__(self, store, failures: int) -> None:
        super().__init__(store)
        self.failures = failures

    def write(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("down", url="test://")
        return super().write(*args, **kwargs)


def test_commit_only_after_the_snapshot_is_durable(tmp_path) -> None:
    from core.config import Settings

    s = Settings().with_sections(
        kafka={"topic_prefix": "p"},
        stream={"flush_events": 3, "retry_max_s": 0.01},
        redis={"key_prefix": "x"},
    )
    commits: list[dict] = []
    writer = FlakyWriter(LocalStore(tmp_path), failures=2)

    def commit(offsets):
        # Durable first: every offset committed is covered by files in the store.
        assert writer.failures == 0 and writer.store.list("events/")
        commits.append(dict(offsets))

    proc = Processor(
        stream=s.stream,
        online_eval=s.online_eval,
        keys=RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions),
        event_types={"p.watch": "watch"},
        redis=FakeRedis(),
        writer=writer,
        dead_letters=None,  # no dead letters in this batch
        genres={},
        commit=commit,
        metrics=StreamMetrics(),
        stop=threading.Event(),
    )
    proc.assign({("p.watch", 0): -1})
    proc.process({("p.watch", 0): [(i, b"u1", watch(i), None) for i in range(5)]})
    assert not commits and proc.flush_due()
    assert proc.flush() == 1
    assert commits == [{("p.watch", 0): 5}]
    # Re-delivered offsets are dropped, not processed twice.
    proc.process({("p.watch", 0): [(i, b"u1", watch(i), None) for i in range(3, 7)]})
    assert proc.totals.duplicates == 2 and proc.totals.processed == 7
    assert proc.parts[("p.watch", 0)].next_offset == 7


def test_metrics_exposition_names() -> None:
    m = StreamMetrics()
    m.events.labels("watch", "ok").inc(3)
    m.freshness.observe(0.2)
    m.lag.labels("p.watch", "0").set(5)
    text = m.exposition().decode()
    for name in (
        "streamrec_stream_events_total",
        "streamrec_stream_freshness_seconds_bucket",
        "streamrec_stream_consumer_lag",
        "streamrec_stream_flush_duration_seconds",
        "streamrec_stream_redis_pipeline_duration_seconds",
    ):
        assert name in text


@pytest.mark.parametrize("compression", ["gzip"])
def test_writer_rejects_unknown_compression(tmp_path, compression) -> None:
    with pytest.raises(ValueError):
        SnapshotWriter(LocalStore(tmp_path), compression)


def test_batches_are_small_while_caught_up_and_grow_only_while_catching_up():
    cap = Cadence(1_000, 10_000)
    assert cap.events == 1_000
    for got, then in ((1_000, 2_000), (2_000, 4_000), (4_000, 8_000), (8_000, 10_000)):
        cap.update(got)  # a full batch: a backlog
        assert cap.events == then
    cap.update(10_000)
    assert cap.events == 10_000
    cap.update(9_999)  # a short one: caught up
    assert cap.events == 1_000
    assert Cadence(5_000, 100).events == 100


def test_faust_engine_fetches_wait_briefly(tmp_path) -> None:
    """Faust builds aiokafka with fetch_max_wait_ms=1500; with it, a fetch of only idle
    partitions held back the busy ones 1.5 s at a time (issue 15's ~2 s freshness tail)."""
    import asyncio

    from core.config import Settings
    from streams.faust_app import create_faust_app
    from streams.faust_consumer import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES

    async def build() -> int:
        async def nothing(*_: object) -> None:
            return None

        app = create_faust_app(
            Settings(),
            group="unit",
            datadir=tmp_path,
            on_batch=nothing,
            on_assigned=nothing,
            on_revoked=nothing,
        )
        thread = app.consumer._thread  # type: ignore[attr-defined]
        aio = thread._create_worker_consumer(app.transport)  # built, never started
        assert aio._fetch_min_bytes == FETCH_MIN_BYTES
        return aio._fetch_max_wait_ms

    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS


def test_confluent_engine_fetches_as_configured() -> None:
    from core.config import Settings
    from streams.worker import consumer_config

    s = Settings().with_sections(stream={"fetch_max_wait_ms": 7, "fetch_min_bytes": 12345})
    conf = consumer_config(s)
    assert (conf["fetch.wait.max.ms"], conf["fetch.min.bytes"]) == (7, 12345)
