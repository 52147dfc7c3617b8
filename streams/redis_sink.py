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

Keys are passed as ARGV (the batch touches keys it only learns while aggregating), which is
fine on a standalone Redis but not on Redis Cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

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

log = logging.getLogger(__name__)

# Out of memory counts as down: with maxmemory reached and nothing left to evict, writes
# fail until memory is freed or raised; the worker holds its commits and retries meanwhile
# (the script's first write is refused before it changed anything: still atomic).
_DOWN = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, OSError)


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


class RedisSink:
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self.url = url
        self.keys = keys
        self.client = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
        )
        self._apply = self.client.register_script(APPLY_LUA)

    def apply(self, ranges: Sequence[PartitionRange], payload: bytes) -> list[ApplyResult]:
        """Apply ``payload`` (:func:`streams.features.to_payload` of the events of all
        ``ranges``) in one script call, atomically with the ranges' watermarks: either all
        are APPLIED, or nothing changed and each result says why. Raises SinkUnavailable if
        Redis cannot be reached."""
        if not ranges:
            return []
        args: list = [len(ranges)]
        for r in ranges:
            args += (self.keys.watermark(r.topic, r.partition), r.first, r.last)
        args.append(payload)
        try:
            reply = self._apply(args=args)
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        n = len(ranges)
        dups: dict[int, set[str]] = {}
        for k in range(2 * n, len(reply) - 1, 2):  # (1-based range number, id) pairs
            d = reply[k + 1]
            dups.setdefault(int(reply[k]) - 1, set()).add(d.decode() if isinstance(d, bytes) else d)
        return [
            ApplyResult(r, int(reply[2 * j]), int(reply[2 * j + 1]), frozenset(dups.get(j, ())))
            for j, r in enumerate(ranges)
        ]

    def watermarks(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        parts = list(partitions)
        try:
            values = self.client.mget([self.keys.watermark(topic, p) for p in parts])
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        return {p: int(v) for p, v in zip(parts, values, strict=True) if v is not None}

    def write_catalog(self, items: Iterable[ItemRecord]) -> int:
        n = 0
        try:
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
        """Replace ``{p}:trending`` by the decayed union of the planned hourly buckets, keeping
        the top ``cap`` (MULTI/EXEC, so readers never see a half-built set)."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.zunionstore(self.keys.trending, dict(plan), aggregate="SUM")
                pipe.zremrangebyrank(self.keys.trending, 0, -(cap + 1))
                pipe.execute()
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err

    def ping(self) -> float:
        t0 = time.perf_counter()
        try:
            self.client.ping()
        except _DOWN as err:
            raise SinkUnavailable("redis", self.url, err) from err
        return time.perf_counter() - t0

    def close(self) -> None:
        self.client.close()
