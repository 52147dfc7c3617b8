"""Serving's Redis plumbing against real redis-servers. The request path's client
(serving.redis_reader): pipelined replies reach the right callers, error replies raise, an
outage raises redis' ConnectionError (what the pipeline turns into a fallback) and the
reader reconnects. Reads follow the per-partition layout (a user's keys in its partition's
slot, item counters summed over the slots). The background item-feature sweep stops when
cancelled."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from core.config import Settings
from schemas.redis_keys import RedisKeys
from serving.features import read_item_table, read_trending, read_user_features, user_keys
from serving.redis_reader import RedisReader, pack
from tests.support.serving import free_port, throwaway_redis

pytestmark = pytest.mark.integration


def test_pack_is_resp_arrays_of_bulk_strings() -> None:
    assert pack((("GET", "k"), ("ECHO", "é"))) == (
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    )


def test_concurrent_requests_get_their_own_replies_in_order(settings: Settings) -> None:
    key = f"{settings.redis.key_prefix}:z"
    redis.Redis.from_url(settings.redis.url).zadd(key, {"a": 1, "b": 2, "c": 3})

    async def go() -> list[list[object]]:
        reader = RedisReader(settings.redis.url)
        try:
            return await asyncio.gather(
                *(
                    reader.execute(("ECHO", f"q{n}"), ("ZREVRANGE", key, "0", str(n % 3)))
                    for n in range(500)
                )
            )
        finally:
            await reader.aclose()

    replies = asyncio.run(go())
    expected = [["c"], ["c", "b"], ["c", "b", "a"]]
    assert replies == [[f"q{n}", expected[n % 3]] for n in range(500)]


def test_reads_of_one_loop_iteration_go_out_in_one_write_and_flush_sends_them_at_once(
    settings: Settings,
) -> None:
    """The reads that requests make in one loop iteration are written together (one write
    and one read on Redis' side for a burst); ``flush`` writes them before the iteration
    ends, as the model batcher does before it holds the loop."""
    key = f"{settings.redis.key_prefix}:burst"
    redis.Redis.from_url(settings.redis.url).zadd(key, {"a": 1, "b": 2})

    async def go() -> tuple[list[int], list[int], list[list[object]]]:
        reader = RedisReader(settings.redis.url)
        try:
            await reader.execute(("PING",))  # connected
            protocol = reader._protocol
            assert protocol is not None and protocol.transport is not None
            writes: list[int] = []
            write = protocol.transport.write
            protocol.transport.write = lambda data: (writes.append(len(data)), write(data))[1]  # type: ignore[method-assign]
            burst = [
                asyncio.ensure_future(reader.execute(("ZREVRANGE", key, "0", "-1")))
                for _ in range(20)
            ]
            replies = await asyncio.gather(*burst)
            in_burst = list(writes)
            writes.clear()
            late = asyncio.ensure_future(reader.execute(("ECHO", "now")))
            await asyncio.sleep(0)  # the read is queued: its task ran up to the send
            reader.flush()
            flushed = list(writes)  # written by flush, before the iteration's callback
            replies.append(await late)
            return in_burst, flushed, replies
        finally:
            await reader.aclose()

    in_burst, flushed, replies = asyncio.run(go())
    assert len(in_burst) == 1 and len(flushed) == 1
    assert replies == [[["b", "a"]]] * 20 + [["now"]]


def test_an_error_reply_raises_and_the_connection_stays_usable(settings: Settings) -> None:
    key = f"{settings.redis.key_prefix}:s"
    redis.Redis.from_url(settings.redis.url).set(key, "x")

    async def go() -> tuple[str, list[object]]:
        reader = RedisReader(settings.redis.url)
        try:
            with pytest.raises(ResponseError, match="WRONGTYPE") as err:
                await reader.execute(("ZREVRANGE", key, "0", "-1"))
            return str(err.value), await reader.execute(("GET", key))
        finally:
            await reader.aclose()

    message, after = asyncio.run(go())
    assert "WRONGTYPE" in message and after == ["x"]


def test_user_features_match_what_redis_py_reads(settings: Settings) -> None:
    keys = RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions)
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    # The user's history is in the slot of its Kafka partition; other slots hold others'.
    home = keys.user_slot("u1")
    assert user_keys(keys, "u1") == home and home.prefix != keys.prefix
    r.zadd(home.user_recent("u1"), {"i1": 10, "i2": 30, "i3": 20})
    for other in keys.all_slots():
        if other != home:
            r.zadd(other.user_recent("u1"), {"not-this-one": 40})
    r.zadd(keys.trending, {f"t{n}": n for n in range(10)})

    async def go():
        reader = RedisReader(settings.redis.url)
        try:
            feats = await read_user_features(reader, keys, "u1", timeout=5)
            return feats, await read_trending(reader, keys, 3, timeout=5)
        finally:
            await reader.aclose()

    feats, trending = asyncio.run(go())
    assert feats.recent == r.zrevrange(home.user_recent("u1"), 0, -1) == ["i2", "i3", "i1"]
    assert trending == ["t9", "t8", "t7"]


def test_database_and_password_from_the_url(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as (_proc, port):
        admin = redis.Redis(port=port)
        admin.config_set("requirepass", "s3cret")
        authed = redis.Redis(port=port, password="s3cret", db=3, decode_responses=True)
        authed.set("k", "in-db-3")

        async def go(url: str) -> list[object]:
            reader = RedisReader(url)
            try:
                return await reader.execute(("GET", "k"))
            finally:
                await reader.aclose()

        assert asyncio.run(go(f"redis://:s3cret@127.0.0.1:{port}/3")) == ["in-db-3"]
        with pytest.raises(RedisConnectionError, match="refused"):
            asyncio.run(go(f"redis://:wrong@127.0.0.1:{port}/3"))


def test_an_outage_raises_connection_error_and_the_reader_reconnects(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as (proc, port):
        url = f"redis://127.0.0.1:{port}/0"
        reader = RedisReader(url, connect_timeout=1.0)
        token = uuid.uuid4().hex

        async def before_and_during() -> tuple[list[object], type[BaseException] | None]:
            first = await reader.execute(("ECHO", token))
            proc.kill()
            proc.wait()
            await asyncio.sleep(0.1)  # the reader sees the connection close
            try:
                await reader.execute(("ECHO", token), timeout=2)
            except RedisConnectionError as err:
                return first, type(err)
            return first, None

        loop = asyncio.new_event_loop()
        try:
            first, raised = loop.run_until_complete(before_and_during())
            assert first == [token] and raised is RedisConnectionError
            with throwaway_redis(tmp_path / "again", port=port):
                assert loop.run_until_complete(reader.execute(("ECHO", "back"))) == ["back"]
            loop.run_until_complete(reader.aclose())
        finally:
            loop.close()


def test_a_read_past_its_timeout_raises_and_its_late_reply_is_dropped(
    settings: Settings,
) -> None:
    empty = f"{settings.redis.key_prefix}:empty-list"

    async def go() -> tuple[type[BaseException] | None, list[object]]:
        reader = RedisReader(settings.redis.url)
        raised = None
        try:
            # Redis holds the reply of a blocking pop for 0.3 s; the caller gives up first.
            await reader.execute(("BLPOP", empty, "0.3"), timeout=0.05)
        except TimeoutError as err:
            raised = type(err)
        # Queued behind the pop on the same connection: it must get its own reply.
        after = await reader.execute(("ECHO", "next"), timeout=5)
        await reader.aclose()
        return raised, after

    raised, after = asyncio.run(go())
    assert raised is TimeoutError and after == ["next"]


def test_unreachable_redis_raises_connection_error() -> None:
    async def go() -> None:
        reader = RedisReader(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
        await reader.execute(("PING",))

    with pytest.raises(RedisConnectionError, match="cannot connect"):
        asyncio.run(go())


def test_the_item_feature_sweep_stops_when_cancelled_mid_read(settings: Settings) -> None:
    """The app's shutdown waits for the sweep: a cancellation swallowed mid-read (as
    redis-py 8.1's asyncio pipeline does about 1 in 7 times) would hang it."""
    from serving.features import ItemFeatureTable

    keys = RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions)
    r = redis.Redis.from_url(settings.redis.url)
    for slot in keys.all_slots():  # a few chunks to read
        r.zadd(slot.pop_all, {f"i{n}": n for n in range(600)})

    async def go() -> int:
        reader = RedisReader(settings.redis.url)
        table = ItemFeatureTable(reader, keys)
        stopped = 0
        try:
            for n in range(60):
                task = asyncio.create_task(table.run(interval_s=3600))
                await asyncio.sleep(n * 0.00005)  # anywhere inside the first sweep
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 5)
                stopped += 1
        finally:
            await reader.aclose()
        return stopped

    assert asyncio.run(go()) == 60


def _item_table(settings: Settings, keys: RedisKeys, max_items: int):
    async def go():
        reader = RedisReader(settings.redis.url)
        try:
            return await read_item_table(reader, keys, max_items=max_items, timeout=5)
        finally:
            await reader.aclose()

    return asyncio.run(go())


def test_the_item_table_reads_stats_and_daily_buckets(settings: Settings) -> None:
    keys = RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions)
    one = keys.slot(1)  # every count in one partition's slot
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    day = 86_400.0
    newest = 1_700_000_000.0
    r.zadd(one.pop_all, {f"i{n}": n + 1 for n in range(300)})
    r.hset(one.item_stats("i7"), mapping={"n_rate": 4, "rating_sum": 14, "last_seen": newest})
    r.zadd(one.pop_day(newest), {"i7": 2, "i8": 1})
    r.zadd(one.pop_day(newest - 10 * day), {"i7": 5})
    r.zadd(keys.trending, {"i7": 3.5, "i8": 1.0})

    features, trending = _item_table(settings, keys, max_items=1000)
    assert len(features) == 300 and features["i0"] == {"pop_all": 1.0}
    assert features["i7"] == {
        "pop_all": 8.0,
        "rating_count": 4.0,
        "rating_mean": 3.5,
        "pop_7d": 2.0,
        "pop_30d": 7.0,
    }
    assert features["i8"]["pop_7d"] == 1.0 and trending == [("i7", 3.5), ("i8", 1.0)]


def test_the_item_table_sums_every_partitions_counters(settings: Settings) -> None:
    """Users of every partition watch an item: its counters are split over the slots
    (schemas.redis_keys) and the table holds their sums, re-ranked by the summed count."""
    keys = RedisKeys(settings.redis.key_prefix, 4)
    p0, p1, p2, p3 = keys.all_slots()
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    day = 86_400.0
    newest = 1_700_000_000.0
    r.zadd(p0.pop_all, {"i7": 5, "b": 4})
    r.zadd(p1.pop_all, {"a": 6})
    r.zadd(p2.pop_all, {"i7": 3})
    r.zadd(p3.pop_all, {"b": 4})
    r.hset(p0.item_stats("i7"), mapping={"n_rate": 2, "rating_sum": 6, "last_seen": newest - 50})
    r.hset(p2.item_stats("i7"), mapping={"n_rate": 2, "rating_sum": 10, "last_seen": newest})
    r.hset(p1.item_stats("a"), mapping={"n_rate": 6, "rating_sum": 30, "last_seen": newest})
    r.hset(p3.item_stats("b"), mapping={"n_rate": 0, "last_seen": newest - 9})
    r.zadd(p0.pop_day(newest), {"i7": 1, "b": 2})
    r.zadd(p2.pop_day(newest), {"i7": 2})
    r.zadd(p2.pop_day(newest - 10 * day), {"i7": 4})
    r.zadd(p3.pop_day(newest - 3 * day), {"b": 2})

    features, _trending = _item_table(settings, keys, max_items=2)
    # "a" leads one slot but its sum (6) is below i7's and b's (8 each): cut at max_items.
    assert set(features) == {"i7", "b"}
    assert features["i7"] == {
        "pop_all": 8.0,
        "rating_count": 4.0,
        "rating_mean": 4.0,  # (6 + 10) / (2 + 2): the sums' ratio, not a mean of means
        "pop_7d": 3.0,
        "pop_30d": 7.0,
    }
    assert features["b"] == {"pop_all": 8.0, "pop_7d": 4.0, "pop_30d": 4.0}
