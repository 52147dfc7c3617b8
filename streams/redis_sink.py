"""Applies a micro-batch's features to Redis atomically with the offset watermarks of all
its partitions.

One Lua script per micro-batch: the features of every partition's events, aggregated
together (an item or a popularity bucket touched by eight partitions costs one update, not
eight), plus ``(watermark key, first, last)`` for each partition. The script reads every
``{p}:wm:{topic}:{partition}`` first; only if each partition's range lies wholly above its
watermark does it apply the features and move every watermark to its range's last offset --
all in one atomic step, so a re-delivered offset is never applied twice. Otherwise it
changes nothing and returns each partition's status and watermark: the caller drops the
partitions already applied, trims those that straddle their watermark (first replay after a
crash, or another worker got there first during a rebalance) and sends the rest again.

The script (:mod:`streams.apply_script`) also refuses a call whose event ids were applied at
earlier offsets of the same partition (a producer re-sending an event), and says which, so
the caller sends the rest again without them.

One call carries the partitions of one partition number (:mod:`schemas.redis_keys`: their
keys share one hash slot), so the same calls run on a standalone Redis and on a Redis
Cluster (``STREAMREC_REDIS_CLUSTER``); :mod:`streams.redis_slots` routes them and waits for
replicas. The keys of a call are passed as ARGV (the batch touches keys it only learns while
aggregating); KEYS[1], the first watermark, names the slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.config import KafkaSettings, RedisSettings
from core.redis import connect
from schemas.catalog import ItemRecord
from schemas.redis_keys import GENRE_SEPARATOR, RedisKeys
from streams.apply_script import (  # noqa: F401  (re-exported: the statuses)
    APPLIED,
    APPLY_LUA,
    CONFLICT,
    DUPLICATE,
    NOT_APPLIED,
    SKIPPED,
)
from streams.errors import SinkUnavailable
from streams.redis_slots import DOWN as _DOWN
from streams.redis_slots import SlotRunner

log = logging.getLogger(__name__)

# Replace the trending set in one atomic step: DEL, then ZADD in chunks (score, member...).
_REPLACE_ZSET_LUA = """
redis.call('DEL', KEYS[1])
for s = 1, #ARGV, 1000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, s, math.min(s + 999, #ARGV)))
end
return #ARGV / 2
"""


@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True)
class ApplyResult:
    range: PartitionRange
    status: int  # APPLIED, SKIPPED, CONFLICT, NOT_APPLIED or DUPLICATE
    watermark: int
    # DUPLICATE: the range's event ids already applied at earlier offsets.
    duplicates: frozenset[str] = frozenset()


def _results(ranges: Sequence[PartitionRange], reply: list) -> list[ApplyResult]:
    """The apply script's reply: (status, watermark) per range, then (range number, id)
    pairs of the ids it refused as already applied."""
    n = len(ranges)
    dups: dict[int, set[str]] = {}
    for k in range(2 * n, len(reply) - 1, 2):  # (1-based range number, id) pairs
        d = reply[k + 1]
        dups.setdefault(int(reply[k]) - 1, set()).add(d.decode() if isinstance(d, bytes) else d)
    return [
        ApplyResult(r, int(reply[2 * j]), int(reply[2 * j + 1]), frozenset(dups.get(j, ())))
        for j, r in enumerate(ranges)
    ]


class RedisSink:
    def __init__(
        self,
        url: str,
        keys: RedisKeys,
        *,
        cluster: bool = False,
        min_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.url = url
        self.keys = keys.base
        self.client = connect(
            url,
            cluster=cluster,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
        self.slots = SlotRunner(
            self.client, url=url, min_replicas=min_replicas, wait_timeout_ms=wait_timeout_ms
        )

    @classmethod
    def from_settings(cls, redis: RedisSettings, kafka: KafkaSettings) -> RedisSink:
        """The sink of the Redis section, for the event topics' partitions."""
        return cls(
            redis.url,
            RedisKeys(redis.key_prefix, kafka.topic_partitions),
            cluster=redis.cluster,
            min_replicas=redis.min_replicas_ack,
            wait_timeout_ms=redis.wait_timeout_ms,
        )

    def run_script(self, lua: str, key: str, args: list) -> object:
        """Run one of the worker's scripts on ``key``'s slot, durably (see redis_slots)."""
        return self.slots.run(lua, key, args)

    def apply(self, ranges: Sequence[PartitionRange], payload: bytes) -> list[ApplyResult]:
        """Apply ``payload`` (:func:`streams.features.to_payload` of the events of all
        ``ranges``) in one script call, atomically with the ranges' watermarks: either all
        are APPLIED, or nothing changed and each result says why. Raises SinkUnavailable if
        Redis cannot be reached."""
        return self.apply_many([(ranges, payload)])[0] if ranges else []

    def apply_many(
        self, calls: Sequence[tuple[Sequence[PartitionRange], bytes]]
    ) -> list[list[ApplyResult]]:
        """:meth:`apply` for several calls (one partition number each) at once: one round
        trip per master, the masters in parallel (:meth:`SlotRunner.run_many`). Each call is
        atomic on its own; if one master fails, the calls of the others may be applied (a
        retry finds them SKIPPED)."""
        script_calls = []
        for ranges, payload in calls:
            part = ranges[0].partition
            if any(r.partition != part for r in ranges):
                raise ValueError("one apply call takes the ranges of one partition number")
            keys = self.keys.slot(part)
            args: list = [len(ranges)]
            for r in ranges:
                args += (keys.watermark(r.topic, r.partition), r.first, r.last)
            args.append(payload)
            script_calls.append((str(args[1]), args))
        replies = self.slots.run_many(APPLY_LUA, script_calls)
        return [_results(ranges, reply) for (ranges, _), reply in zip(calls, replies, strict=True)]

    def watermarks(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        parts = list(partitions)
        try:
            # One GET each: the partitions' watermarks live in different slots.
            with self.client.pipeline(transaction=False) as pipe:
                for p in parts:
                    pipe.get(self.keys.slot(p).watermark(topic, p))
                values = pipe.execute()
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        return {p: int(v) for p, v in zip(parts, values, strict=True) if v is not None}

    def write_catalog(self, items: Iterable[ItemRecord]) -> int:
        n = 0
        try:  # one HSET per item: no transaction, so a cluster spreads them by slot
            with self.client.pipeline(transaction=False) as pipe:
                for item in items:
                    mapping = {"title": item.title, "genres": GENRE_SEPARATOR.join(item.genres)}
                    if item.year is not None:
                        mapping["year"] = str(item.year)
                    pipe.hset(self.keys.catalog(item.item_id), mapping=mapping)
                    n += 1
                if n:
                    pipe.execute()
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        return n

    def recompute_trending(self, plan: Sequence[tuple[str, float]], cap: int) -> None:
        """Replace ``{p}:trending`` by the decayed sum of the planned hourly buckets (every
        partition's), keeping the top ``cap``. The buckets live in as many slots as there
        are partitions, so they are summed here rather than by ZUNIONSTORE; the result is
        written in one script, so readers never see a half-built set."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, _ in plan:
                    pipe.zrange(key, 0, -1, withscores=True)
                buckets = pipe.execute()
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        total: dict[bytes, float] = {}
        for (_, weight), bucket in zip(plan, buckets, strict=True):
            for item, score in bucket:
                total[item] = total.get(item, 0.0) + weight * score
        top = sorted(total.items(), key=lambda kv: -kv[1])[:cap]
        args: list = []
        for item, score in top:
            args += (repr(score), item)
        self.slots.run(_REPLACE_ZSET_LUA, self.keys.trending, args, durable=False)

    def ping(self) -> float:
        t0 = time.perf_counter()
        try:
            self.client.ping()
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.slots.close()
        finally:
            self.client.close()
