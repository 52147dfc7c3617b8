"""Reads of the real-time features the stream processor writes (layout: ``schemas.redis_keys``).

Per request, one pipelined round trip (:class:`serving.redis_reader.RedisReader`) fetches
the user's recent items and the head of the trending set. Item stats feed the ranker for
whatever candidates the model generates, which are only known inside the model call, so
they are kept in an in-process table that :class:`ItemFeatureTable` re-reads in the
background (every few seconds, in short pipelined slices between requests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from models.features import LiveItemFeatures
from schemas.redis_keys import RedisKeys
from serving.redis_reader import RedisReader

log = logging.getLogger(__name__)

DAY_S = 86_400.0
WINDOWS_DAYS = (7, 30)  # within the daily buckets' TTL (schemas.redis_keys.POP_DAY_TTL_S)
_CHUNK = 250  # keys per pipeline in the background sweep: short slices of loop time


@dataclass(frozen=True)
class UserFeatures:
    """``recent``: every item of the user's Redis history, newest first (all are excluded
    from answers); ``trending``: the head of the live trending set, best first."""

    recent: list[str]
    trending: list[str]

    def history(self, n: int) -> list[str]:
        return self.recent[:n]


async def read_user_features(
    reader: RedisReader,
    keys: RedisKeys,
    user_id: str,
    *,
    trending_n: int,
    timeout: float | None = None,
) -> UserFeatures:
    """One pipelined round trip. Raises redis' ConnectionError, or TimeoutError past
    ``timeout`` seconds."""
    recent, trending = await reader.execute(
        # The recent set is capped by the writer (USER_RECENT_CAP): reading it whole is bounded.
        ("ZREVRANGE", keys.user_recent(user_id), "0", "-1"),
        # Without scores: the order is all the fallback needs, and score parsing is not free.
        ("ZREVRANGE", keys.trending, "0", str(max(trending_n - 1, 0))),
        timeout=timeout,
    )
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


def _pairs(flat: list[str]) -> list[tuple[str, float]]:
    """A ``WITHSCORES`` reply (member, score, member, score, ...) as pairs."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


async def read_item_table(
    reader: RedisReader, keys: RedisKeys, *, max_items: int, timeout: float | None = None
) -> tuple[dict[str, dict[str, float]], list[tuple[str, float]]]:
    """(item -> live ranker features named as in ``models.features.ITEM_FEATURES``, the
    trending list), read in pipelined chunks on the request path's connection: hiredis
    parses the replies and requests interleave between chunks (a thread would hold the
    GIL for the whole parse and stall the event loop).

    Live values: ``pop_all`` (all-time interactions), ``rating_count``/``rating_mean`` (item
    stats) and ``pop_7d``/``pop_30d`` (daily buckets, counted back from the newest event
    day). Features Redis cannot provide keep the model's frozen values."""
    pop_all, trending = await reader.execute(
        ("ZREVRANGE", keys.pop_all, "0", str(max_items - 1), "WITHSCORES"),
        ("ZREVRANGE", keys.trending, "0", "-1", "WITHSCORES"),
        timeout=timeout,
    )
    ranked = _pairs(pop_all)
    features: dict[str, dict[str, float]] = {}
    newest = 0.0
    for start in range(0, len(ranked), _CHUNK):
        chunk = ranked[start : start + _CHUNK]
        replies = await reader.execute(
            *[("HMGET", keys.item_stats(i), "n_rate", "rating_sum", "last_seen") for i, _ in chunk],
            timeout=timeout,
        )
        for (item, count), (n_rate, rating_sum, last_seen) in zip(chunk, replies, strict=True):
            f = {"pop_all": count}
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
        days = await reader.execute(
            *[
                ("ZRANGE", keys.pop_day(newest - d * DAY_S), "0", "-1", "WITHSCORES")
                for d in range(max(WINDOWS_DAYS))
            ],
            timeout=timeout,
        )
        buckets = [_pairs(day) for day in days]
        for window in WINDOWS_DAYS:
            for item, value in _day_sums(buckets, window).items():
                if item in features:
                    features[item][f"pop_{window}d"] = value
    return features, _pairs(trending)


@dataclass
class ItemFeatureTable:
    """Item id -> live ranker features, plus the last trending list seen (so a Redis outage
    still falls back to recent popularity rather than none). Refreshed in the background.
    ``features`` is immutable (models memoise derived arrays on it): a change swaps it."""

    reader: RedisReader
    keys: RedisKeys
    max_items: int = 200_000
    timeout_s: float | None = None
    features: LiveItemFeatures = field(default_factory=lambda: LiveItemFeatures({}))
    _raw: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    trending: list[tuple[str, float]] = field(default_factory=list)
    refreshed_at: float | None = None  # monotonic time of the last complete sweep
    generation: int = 0  # bumped whenever the features change

    async def refresh(self) -> int:
        """One sweep."""
        features, trending = await read_item_table(
            self.reader, self.keys, max_items=self.max_items, timeout=self.timeout_s
        )
        if features != self._raw:
            self.generation += 1  # memoised answers computed with the old table are void
            # Whole objects are swapped: a model call on another thread sees the old table
            # or the new one, never a half-built one.
            self._raw, self.features = features, LiveItemFeatures(features)
        self.trending = trending
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
