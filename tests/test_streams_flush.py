"""Unit tests of the Parquet cadence off the consumer thread and of the TTL tracker (pure
logic: a gated local store, no Kafka, no Redis)."""

from __future__ import annotations

import threading

import orjson

from core.config import Settings
from core.storage.local import LocalStore
from schemas.redis_keys import RedisKeys
from streams.decode import decode_one
from streams.features import Limits, TtlTracker, compute_deltas, to_payload
from streams.metrics import StreamMetrics
from streams.processor import Processor
from streams.snapshots import SnapshotWriter
from tests.support.events import T0, FakeRedis, rate, watch


class GatedWriter(SnapshotWriter):
    """Writes only once the test opens the gate: a write 'in flight' for as long as needed."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.gate = threading.Event()
        self.started = threading.Event()

    def write(self, *args, **kwargs):
        self.started.set()
        assert self.gate.wait(30), "gate never opened"
        return super().write(*args, **kwargs)


def make_processor(tmp_path, **stream):
    s = Settings().with_sections(
        kafka={"topic_prefix": "p"},
        redis={"key_prefix": "x"},
        stream={"retry_max_s": 0.01, **stream},
    )
    writer = GatedWriter(LocalStore(tmp_path))
    commits: list[dict] = []
    proc = Processor(
        stream=s.stream,
        online_eval=s.online_eval,
        keys=RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions),
        event_types={"p.watch": "watch"},
        redis=FakeRedis(),
        writer=writer,
        dead_letters=None,
        genres={},
        commit=lambda offsets: commits.append(dict(offsets)),
        metrics=StreamMetrics(),
        stop=threading.Event(),
    )
    return proc, writer, commits


def batch(first: int, n: int) -> list:
    return [(i, b"u1", watch(i), None) for i in range(first, first + n)]


def test_loop_keeps_going_while_a_flush_is_in_flight_and_commits_after(tmp_path) -> None:
    proc, writer, commits = make_processor(tmp_path, flush_events=3)
    tp = ("p.watch", 0)
    proc.assign({tp: -1})
    proc.process({tp: batch(0, 4)})
    proc.poll_flush()  # due: the write starts in the background and blocks on the gate
    assert writer.started.wait(10)
    proc.process({tp: batch(4, 2)})  # the loop is not blocked by the write
    proc.poll_flush()
    assert commits == [] and proc.parts[tp].committed == -1  # nothing durable yet
    writer.gate.set()
    proc.flush()  # waits for the job in flight, then writes and commits the rest
    assert commits == [{tp: 4}, {tp: 6}]
    assert len(writer.store.list("events/")) == 2 and proc.totals.files_written == 2


class SyncLog(LocalStore):
    """Records the deferred puts and syncs, with the commits made before each sync."""

    def __init__(self, root, commits: list) -> None:
        super().__init__(root)
        self.commits = commits
        self.log: list = []

    def put_deferred(self, key: str, data: bytes) -> None:
        super().put_deferred(key, data)
        self.log.append(("put", key))

    def sync(self, keys) -> None:
        super().sync(keys)
        self.log.append(("sync", sorted(keys), len(self.commits)))


def test_a_job_syncs_all_its_files_once_before_its_commit(tmp_path) -> None:
    proc, writer, commits = make_processor(tmp_path, flush_events=100)
    writer.store = store = SyncLog(tmp_path, commits)
    writer.gate.set()
    a, b = ("p.watch", 0), ("p.watch", 1)
    proc.assign({a: -1, b: -1})
    days = [(i, b"u1", watch(i, t=T0 + i * 86400), None) for i in range(3)]
    proc.process({a: days, b: batch(0, 2)})
    proc.flush()
    puts = sorted(k for op, k, *_ in store.log if op == "put")
    assert len(puts) == 2  # a file per partition (3 event-time days in one: dated by arrival)
    assert [e[0] for e in store.log] == ["put", "put", "sync"]
    assert store.log[2] == ("sync", puts, 0)  # every file, once, before any commit
    assert commits == [{a: 3, b: 2}]
    assert store.list("events/") == puts


def test_partition_lost_during_a_flush_is_not_committed(tmp_path) -> None:
    proc, writer, commits = make_processor(tmp_path, flush_events=2)
    a, b = ("p.watch", 0), ("p.watch", 1)
    proc.assign({a: -1, b: -1})
    proc.process({a: batch(0, 2), b: batch(0, 3)})
    proc.poll_flush()
    assert writer.started.wait(10)
    proc.drop([b])  # lost while its file was being written: its next owner replays it
    writer.gate.set()
    proc.flush()
    assert commits == [{a: 2}]


def test_buffers_past_twice_flush_events_wait_for_the_write(tmp_path) -> None:
    proc, writer, commits = make_processor(tmp_path, flush_events=2)
    tp = ("p.watch", 0)
    proc.assign({tp: -1})
    proc.process({tp: batch(0, 2)})
    proc.poll_flush()
    assert writer.started.wait(10)
    proc.process({tp: batch(2, 4)})  # 4 buffered >= 2 x 2 while the write is in flight
    threading.Timer(0.2, writer.gate.set).start()
    proc.poll_flush()  # backpressure: blocks until the first job is durable
    assert commits[0] == {tp: 2}


def test_ttl_tracker_skips_recent_expires_but_never_the_ratings_hash() -> None:
    now = [100.0]
    ttls = TtlTracker(refresh_s=60, clock=lambda: now[0])
    keys = RedisKeys("x")
    evs = [
        decode_one(watch(1, "u1", "m1", T0), "watch"),
        decode_one(rate(2, "u1", "m1", 4.0, T0 + 1), "rate"),
    ]
    d = compute_deltas(evs, {"m1": ["Drama"]})
    refreshed: list[str] = []
    doc = orjson.loads(to_payload(d, keys, Limits(), 1.0, fresh=ttls, refreshed=refreshed))
    assert doc["u"][0][8] == 7 and doc["i"][0][5] == 1 and doc["h"][0][2] == 1
    assert keys.user_ratings("u1") not in refreshed  # always refreshed by the script
    ttls.confirm(refreshed)
    doc = orjson.loads(to_payload(d, keys, Limits(), 2.0, fresh=ttls))
    assert doc["u"][0][8] == 0 and doc["i"][0][5] == 0 and doc["h"][0][2] == 0
    now[0] += 61  # the refresh window has passed
    doc = orjson.loads(to_payload(d, keys, Limits(), 3.0, fresh=ttls))
    assert doc["u"][0][8] == 7 and doc["d"][0][2] == 1


def test_ttl_tracker_is_bounded() -> None:
    ttls = TtlTracker(refresh_s=60, max_keys=3)
    ttls.confirm(["a", "b"])
    ttls.confirm(["c", "d"])  # over the bound: forgotten, which only costs an early refresh
    assert len(ttls) == 2 and "c" in ttls and "a" not in ttls


class GatedRedis(FakeRedis):
    """Applies only once the test opens the gate: a Redis call 'in flight'."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def apply_many(self, calls):
        assert self.gate.wait(30), "gate never opened"
        return super().apply_many(calls)


def test_a_job_is_cut_while_redis_applies_and_committed_only_once_applied(tmp_path) -> None:
    proc, writer, commits = make_processor(tmp_path, flush_events=3)
    proc.redis = proc.applier.redis = redis = GatedRedis()
    writer.gate.set()
    tp = ("p.watch", 0)
    proc.assign({tp: -1})
    proc.process({tp: batch(0, 4)})  # its Redis call blocks on the gate
    proc.poll_flush()  # due: the job is cut without waiting for the call in flight
    job = proc.flusher.job
    assert job is not None and job.redis_seq == 1
    proc.flusher._future.result(10)  # the files are durable ...
    proc.poll_flush()
    assert commits == [] and proc.parts[tp].committed == -1  # ... but Redis has not applied
    redis.gate.set()
    proc.applier.wait()
    proc.poll_flush()
    assert commits == [{tp: 4}]
