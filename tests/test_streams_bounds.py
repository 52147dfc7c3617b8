"""Bounds of the stream worker on the real services (issue 18): popularity sets capped
whatever item ids arrive, Redis's memory policy evicting only what may go, /metrics on
loopback unless told otherwise, and temp files of a killed writer removed."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis

from core.config import Settings
from core.storage.local import LocalStore
from schemas.events import WatchEvent
from schemas.redis_keys import RedisKeys
from schemas.snapshots import SnapshotFile
from streams.app import run_worker, serve_metrics
from streams.errors import SinkUnavailable
from streams.features import Limits, compute_deltas, to_payload
from streams.metrics import StreamMetrics
from streams.redis_sink import APPLIED, PartitionRange, RedisSink
from tests.support.ports import free_port
from tests.support.stream_worker import (
    produce,
    run_caught_up,
    start_redis_until_ping,
    watch_doc,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
T = datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_popularity_sets_keep_their_top_items_whatever_item_ids_arrive(topics: Settings) -> None:
    s = topics.with_sections(stream={"pop_cap": 100, "flush_interval_s": 1.0})
    popular = {f"hit{i}": 20 + i for i in range(5)}
    records = [
        ("watch", f"u{i % 50}".encode(), watch_doc(i, f"u{i % 50}", f"junk-{i}"))
        for i in range(3000)
    ]
    n = len(records)
    for item, count in popular.items():
        for _ in range(count):
            records.append(("watch", b"fan", watch_doc(n, "fan", item)))
            n += 1
    produce(s, records)
    run_caught_up(s)
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    keys = RedisKeys(s.redis.key_prefix)
    # Each partition's sets are capped (the layout keeps popularity per partition).
    assert [r.zcard(k.pop_all) for k in keys.all_slots()] == [100] * 4
    fan = keys.user_slot("fan")
    top = dict(r.zrevrange(fan.pop_all, 0, 4, withscores=True))
    assert top == {k: float(v) for k, v in popular.items()}  # the top is exact
    hours = r.keys(f"{s.redis.key_prefix}:*:pop:h:*")
    days = r.keys(f"{s.redis.key_prefix}:*:pop:d:*")
    assert len(hours) == len(days) == 4
    assert {r.zcard(k) for k in hours + days} == {100}
    assert r.ttl(keys.user_slot("u7").item_stats("junk-7")) > 0  # per-item keys expire


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_config_evicts_features_never_watermarks_and_oom_holds_the_worker(
    tmp_path: Path,
) -> None:
    from string import Template

    port = free_port()
    (tmp_path / "data").mkdir()
    conf = tmp_path / "redis.conf"
    template = (ROOT / "infra" / "redis" / "redis.conf.template").read_text()
    conf.write_text(Template(template).substitute(port=port, dir=tmp_path / "data"))
    proc = start_redis_until_ping(["redis-server", str(conf)], port)
    try:
        r = redis.Redis(port=port)
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        assert int(r.config_get("maxmemory")["maxmemory"]) == 1024**3
        keys = RedisKeys("x")
        sink = RedisSink(f"redis://127.0.0.1:{port}/0", keys)

        def payload(user: str) -> bytes:
            ev = WatchEvent(event_id=user, user_id=user, item_id="m1", ts=T)
            return to_payload(compute_deltas([ev]), keys, Limits(), time.time())

        for p in range(4):  # one call per partition number (one slot each)
            (res,) = sink.apply([PartitionRange("t.watch", p, 0, 9)], payload("a"))
            assert res.status == APPLIED
        # Shrink the limit and flood it with features (keys with a TTL): they are evicted,
        # the watermarks are not.
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 2_000_000)
        blob = b"x" * 1000
        for i in range(20_000):
            r.set(f"x:user:u{i}:stats", blob, ex=3600)
        assert r.dbsize() < 20_000  # evicted
        assert sink.watermarks("t.watch", range(4)) == dict.fromkeys(range(4), 9)
        # Full of keys that may not be evicted: the apply is refused as a sink outage
        # (the worker holds its commits and retries), not an unexpected error.
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(20_000):
                r.set(f"x:catalog:m{i}", blob)
        # Well past the limit, not at its edge (a few freed bytes would let a write through).
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) // 2)
        with pytest.raises(SinkUnavailable, match="OutOfMemoryError"):
            sink.apply([PartitionRange("t.watch", 0, 10, 10)], payload("b"))
        assert sink.watermarks("t.watch", [0]) == {0: 9}  # refused whole
        assert not r.keys("x:*user:b:stats")
        sink.close()
    finally:
        proc.kill()
        proc.wait()


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _remote, state = line.split()[1:4]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            out.add(addr)
    return out


def test_worker_metrics_listen_on_loopback_unless_configured(topics: Settings) -> None:
    s = topics.with_sections(stream={"metrics_port": 0})
    summary = run_worker(s, until_caught_up=True, handle_signals=False)
    assert summary.metrics_port
    assert _listening(summary.metrics_port) == {"0100007F"}  # 127.0.0.1 only, by default
    port = serve_metrics(StreamMetrics(), 0, "0.0.0.0")
    assert _listening(port) == {"00000000"}


def test_temp_files_of_a_killed_writer_are_removed_on_assignment(topics: Settings) -> None:
    s = topics.with_sections(stream={"flush_interval_s": 1.0})
    store = LocalStore(s.storage.location.removeprefix("file://"))

    def temp_of(partition: int, first: int, mtime: float) -> Path:
        # Exactly what a writer killed between its write and its rename leaves behind.
        ts = (1_717_200_000_000_000, 1_717_200_009_000_000)
        key = SnapshotFile.of_rows("watch", date(2024, 6, 1), partition, (first, first + 9), ts).key
        path = Path(store._write_tmp(store._path(key), b"half a parquet file"))
        os.utime(path, (mtime, mtime))
        return path

    before = time.time() - 5
    stale = [temp_of(p, 0, before) for p in range(4)]  # kill -9 mid-write, before this start
    other = Path(store._write_tmp(store._path("models/m/1/manifest.json"), b"{}"))
    os.utime(other, (before, before))
    # A write in flight, begun after the worker started (another worker, zombie): left alone.
    live = temp_of(1, 100, time.time() + 3600)
    produce(s, [("watch", b"u1", watch_doc(1, "u1"))])
    run_caught_up(s)
    assert [p for p in stale if p.exists()] == []
    assert other.exists()  # not a snapshot partition's
    assert live.exists()
    assert store.list("events/")  # the event's snapshot file itself was written
