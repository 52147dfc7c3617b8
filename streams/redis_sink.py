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
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.catalog import ItemRecord
from schemas.redis_keys import GENRE_SEPARATOR, RedisKeys
from streams.errors import SinkUnavailable

log = logging.getLogger(__name__)

# Per range: applied; already applied (last <= watermark); straddles its watermark; or
# would apply, but another range of the call did not, so nothing changed (send it again).
APPLIED, SKIPPED, CONFLICT, NOT_APPLIED = 0, 1, 2, 3

APPLY_LUA = """
local call = redis.call
local n = tonumber(ARGV[1])
local out, ok = {}, true
for j = 0, n - 1 do
  local wm = tonumber(call('GET', ARGV[2 + 3 * j]) or '-1')
  local first, last = tonumber(ARGV[3 + 3 * j]), tonumber(ARGV[4 + 3 * j])
  local st = 0
  if last <= wm then st = 1 elseif first <= wm then st = 2 end
  if st ~= 0 then ok = false end
  out[#out + 1] = st
  out[#out + 1] = tostring(wm)
end
if not ok then
  for j = 1, #out, 2 do if out[j] == 0 then out[j] = 3 end end
  return out
end
local doc = cjson.decode(ARGV[2 + 3 * n])
local now, cap, ttl = doc.now, doc.cap, doc.ttl
local function hmax(key, field, value, ...)
  local cur = tonumber(call('HGET', key, field) or '-1')
  if value > cur then call('HSET', key, field, value, ...)
  elseif select('#', ...) > 0 then call('HSET', key, ...) end
end
local function zincr(key, list, t)
  for j = 1, #list, 2 do call('ZINCRBY', key, list[j], list[j + 1]) end
  if t then call('EXPIRE', key, t) end
end
local ttl_u = ttl[1]
for _, u in ipairs(doc.u) do
  local sk, rk, hk, gk, ex = u[1], u[2], u[3], u[4], u[12]
  if u[5] > 0 then call('HINCRBY', sk, 'n_watch', u[5]) end
  if u[6] > 0 then
    call('HINCRBY', sk, 'n_rate', u[6])
    call('HINCRBYFLOAT', sk, 'rating_sum', u[7])
  end
  hmax(sk, 'last_active', u[8], 'updated_at', now)
  if ex[1] == 1 then call('EXPIRE', sk, ttl_u) end
  local recent = u[9]
  if #recent > 0 then
    -- Only new members can push the history over its cap: skip ZCARD otherwise.
    local added = call('ZADD', rk, 'GT', unpack(recent))
    if #u[10] > 0 then
      call('HSET', hk, unpack(u[10]))
      call('EXPIRE', hk, ttl_u)
    end
    local n = added > 0 and call('ZCARD', rk) or 0
    if n > cap then
      local old = call('ZRANGE', rk, 0, n - cap - 1)
      call('ZREMRANGEBYRANK', rk, 0, n - cap - 1)
      for j = 1, #old, 1000 do
        call('HDEL', hk, unpack(old, j, math.min(j + 999, #old)))
      end
    end
    if ex[2] == 1 then call('EXPIRE', rk, ttl_u) end
  end
  local g = u[11]
  if #g > 0 then
    for j = 1, #g, 2 do call('HINCRBY', gk, g[j], g[j + 1]) end
    if ex[3] == 1 then call('EXPIRE', gk, ttl_u) end
  end
end
for _, it in ipairs(doc.i) do
  local k = it[1]
  if it[2] > 0 then call('HINCRBY', k, 'n_watch', it[2]) end
  if it[3] > 0 then
    call('HINCRBY', k, 'n_rate', it[3])
    call('HINCRBYFLOAT', k, 'rating_sum', it[4])
  end
  hmax(k, 'last_seen', it[5])
  if it[6] == 1 then call('EXPIRE', k, ttl[2]) end
end
for _, h in ipairs(doc.h) do zincr(h[1], h[2], h[3] == 1 and ttl[3] or nil) end
for _, h in ipairs(doc.d) do zincr(h[1], h[2], h[3] == 1 and ttl[4] or nil) end
zincr(doc.a[1], doc.a[2], nil)
for j = 0, n - 1 do
  call('SET', ARGV[2 + 3 * j], ARGV[4 + 3 * j])
  out[2 * j + 2] = ARGV[4 + 3 * j]
end
return out
"""

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True)
class ApplyResult:
    range: PartitionRange
    status: int  # APPLIED, SKIPPED, CONFLICT or NOT_APPLIED
    watermark: int


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
        return [
            ApplyResult(r, int(reply[2 * j]), int(reply[2 * j + 1])) for j, r in enumerate(ranges)
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
