"""Reads of the real-time features the stream processor writes (layout: ``schemas.redis_keys``).

Per request, one pipelined round trip fetches the user's recent items and the head of the
trending set. Item stats feed the ranker for whatever candidates the model generates, which
are only known inside the model call, so they are kept in an in-process table that
:class:`ItemFeatureTable` re-reads in the background (every few seconds, in short
pipelined slices between requests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from schemas.redis_keys import RedisKeys

log = logging.getLogger(__name__)

DAY_S = 86_400.0
WINDOWS_DAYS = (7, 30)  # within the daily buckets' TTL (schemas.redis_keys.POP_DAY_TTL_S)
_CHUNK = 100  # keys per pipeline in the background sweep: short slices of loop time
_DAYS_PER_PIPELINE = 3


@dataclass(frozen=True)
class UserFeatures:
    """``recent``: every item of the user's Redis history, newest first (all are excluded
    from answers); ``trending``: the head of the live trending set, best first."""

    recent: list[str]
    trending: list[str]

    def history(self, n: int) -> list[str]:
        return self.recent[:n]


async def read_user_features(
    redis: Redis, keys: RedisKeys, user_id: str, *, trending_n: int
) -> UserFeatures:
    """One pipelined round trip. Raises redis' ConnectionError/TimeoutError when down."""
    pipe = redis.pipeline(transaction=False)
    # The recent set is capped by the writer (USER_RECENT_CAP), so reading it whole is bounded.
    pipe.zrevrange(keys.user_recent(user_id), 0, -1)
    # Without scores: the order is all the fallback needs, and score parsing is not free.
    pipe.zrevrange(keys.trending, 0, max(trending_n - 1, 0))
    recent, trending = await pipe.execute()
    return UserFeatures(recent=recent, trending=trending)


def _to_float(value: str | float | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _day_sums(days: list[list[tuple[str, float]]], n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for bucket in days[:n]:
        for item, score in bucket:
            out[item] = out.get(item, 0.0) + float(score)
    return out


async def read_item_table(
    redis: Redis, keys: RedisKeys, *, max_items: int
) -> tuple[dict[str, dict[str, float]], list[tuple[str, float]]]:
    """(item -> live ranker features named as in ``models.features.ITEM_FEATURES``, the
    trending list), read in small pipelined chunks so requests interleave with the sweep
    (a thread would hold the GIL for the whole parse and stall the event loop).

    Live values: ``pop_all`` (all-time interactions), ``rating_count``/``rating_mean`` (item
    stats) and ``pop_7d``/``pop_30d`` (daily buckets, counted back from the newest event
    day). Features Redis cannot provide keep the model's frozen values."""
    pipe = redis.pipeline(transaction=False)
    pipe.zrevrange(keys.pop_all, 0, max_items - 1, withscores=True)
    pipe.zrevrange(keys.trending, 0, -1, withscores=True)
    pop_all, trending = await pipe.execute()
    features: dict[str, dict[str, float]] = {}
    newest = 0.0
    for start in range(0, len(pop_all), _CHUNK):
        chunk = pop_all[start : start + _CHUNK]
        pipe = redis.pipeline(transaction=False)
        for item, _ in chunk:
            pipe.hmget(keys.item_stats(item), "n_rate", "rating_sum", "last_seen")
        for (item, count), (n_rate, rating_sum, last_seen) in zip(
            chunk, await pipe.execute(), strict=True
        ):
            f = {"pop_all": float(count)}
            n, total = _to_float(n_rate), _to_float(rating_sum)
            if n:
                f["rating_count"] = n
                if total is not None:
                    f["rating_mean"] = total / n
            newest = max(newest, _to_float(last_seen) or 0.0)
            features[item] = f
    if newest:
        # Buckets are event-time days (replays of old data too), so count back from the
        # newest event rather than from the wall clock.
        days: list[list[tuple[str, float]]] = []
        for first in range(0, max(WINDOWS_DAYS), _DAYS_PER_PIPELINE):
            pipe = redis.pipeline(transaction=False)
            for d in range(first, min(first + _DAYS_PER_PIPELINE, max(WINDOWS_DAYS))):
                pipe.zrange(keys.pop_day(newest - d * DAY_S), 0, -1, withscores=True)
            days.extend(await pipe.execute())
        for window in WINDOWS_DAYS:
            for item, value in _day_sums(days, window).items():
                if item in features:
                    features[item][f"pop_{window}d"] = value
    return features, [(i, float(sc)) for i, sc in trending]


@dataclass
class ItemFeatureTable:
    """Item id -> live ranker features, plus the last trending list seen (so a Redis outage
    still falls back to recent popularity rather than none). Refreshed in the background."""

    redis: Redis
    keys: RedisKeys
    max_items: int = 200_000
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    trending: list[tuple[str, float]] = field(default_factory=list)
    refreshed_at: float | None = None  # monotonic time of the last complete sweep
    generation: int = 0  # bumped whenever the features change

    async def refresh(self) -> int:
        """One sweep."""
        features, trending = await read_item_table(self.redis, self.keys, max_items=self.max_items)
        if features != self.features:
            self.generation += 1  # memoised answers computed with the old table are void
        # Whole objects are swapped: a model call on another thread sees the old table or
        # the new one, never a half-built one.
        self.features, self.trending = features, trending
        self.refreshed_at = time.monotonic()
        return len(features)

    async def run(self, interval_s: float) -> None:
        """Refresh forever; errors (Redis down) are logged once per outage and retried."""
        failing = False
        while True:
            try:
                n = await self.refresh()
                if failing:
                    log.info("item features: Redis is back (%d items)", n)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not failing:
                    log.warning("item features: refresh failed, keeping the last table: %s", err)
                failing = True
            await asyncio.sleep(interval_s)
