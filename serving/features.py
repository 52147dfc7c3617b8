"""Reads of the real-time features the stream processor writes (layout: ``schemas.redis_keys``).

Per request, one pipelined round trip (:class:`serving.redis_reader.RedisReader`, or
:class:`serving.cluster_reader.ClusterReader` on a Redis Cluster) fetches the user's recent
items from the slot of the user's Kafka partition (the trending set comes with the item table).
Item stats feed the ranker for whatever candidates the model generates, which are only known
inside the model call, so they are kept in an in-process table that :class:`ItemFeatureTable`
re-reads in the background (every few seconds, in short pipelined slices between requests).
Item and popularity counters are kept per partition by the stream processor: the table is
their sum over every partition's slot.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

from models.features import LiveItemFeatures
from schemas.redis_keys import RedisKeys
from schemas.topics import partition_of
from serving.redis_reader import Command

log = logging.getLogger(__name__)

DAY_S = 86_400.0
WINDOWS_DAYS = (7, 30)  # within the daily buckets' TTL (schemas.redis_keys.POP_DAY_TTL_S)
_CHUNK = 250  # keys per pipeline in the background sweep: short slices of loop time
# Pause between the sweep's round trips once serving: its ~35 slices (~40 ms of loop CPU on
# MovieLens) back to back kept the loop busy for 70-200 ms every sweep, and at half the
# max req/s most requests of that window took over 10 ms (the probe, issue 14).
SWEEP_PAUSE_S = 0.01
_STATS = ("n_rate", "rating_sum", "last_seen")


class Reader(Protocol):
    """A :class:`~serving.redis_reader.RedisReader` or a
    :class:`~serving.cluster_reader.ClusterReader`."""

    async def execute(self, *commands: Command, timeout: float | None = None) -> list[Any]: ...


@functools.lru_cache(maxsize=8)
def _slots(keys: RedisKeys) -> tuple[RedisKeys, ...]:
    # Built once per layout: building a slot's keys per request would cost as much as the
    # murmur2 hash that picks it.
    return tuple(keys.all_slots())


@dataclass(frozen=True)
class UserFeatures:
    """``recent``: every item of the user's Redis history, newest first (all are excluded
    from answers)."""

    recent: list[str]

    def history(self, n: int) -> list[str]:
        return self.recent[:n]


def user_keys(keys: RedisKeys, user_id: str) -> RedisKeys:
    """The keys of the slot that holds ``user_id``'s state (``keys.user_slot``, cached)."""
    slots = _slots(keys.base)
    return slots[partition_of(user_id, len(slots))]


@functools.lru_cache(maxsize=1 << 16)
def _recent_key(keys: RedisKeys, user_id: str) -> str:
    # Per active user, not per request: the slot's murmur2 and the key's formatting were a
    # few microseconds of every request (bounded: 65,536 users' keys, ~10 MB at most).
    return user_keys(keys, user_id).user_recent(user_id)


async def read_user_features(
    reader: Reader,
    keys: RedisKeys,
    user_id: str,
    *,
    timeout: float | None = None,
) -> UserFeatures:
    """One round trip to one node: the user's slot. (The trending set, which only the
    fallback needs, comes from the item table's sweep: reading it here made every request on
    a cluster a second node's round trip.) Raises redis' ConnectionError, or TimeoutError
    past ``timeout`` seconds."""
    # The recent set is capped by the writer (USER_RECENT_CAP): reading it whole is bounded.
    (recent,) = await reader.execute(
        ("ZREVRANGE", _recent_key(keys, user_id), "0", "-1"),
        timeout=timeout,
    )
    return UserFeatures(recent=recent)


async def read_trending(
    reader: Reader, keys: RedisKeys, n: int, *, timeout: float | None = None
) -> list[str]:
    """The head of the live trending set, best first (for a fallback before the item
    table's first sweep)."""
    # Without scores: the order is all the fallback needs, and score parsing is not free.
    (items,) = await reader.execute(
        ("ZREVRANGE", keys.base.trending, "0", str(max(n - 1, 0))), timeout=timeout
    )
    return list(items)


def _to_float(value: str | float | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _pairs(flat: list[str]) -> list[tuple[str, float]]:
    """A ``WITHSCORES`` reply (member, score, member, score, ...) as pairs."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


async def _sum_pop_all(
    reader: Reader, slots: tuple[RedisKeys, ...], max_items: int, timeout: float | None
) -> tuple[dict[str, float], list[list[str]]]:
    """All-time popularity summed over the slots (each slot's top ``max_items``), and the
    items each slot holds. One read per slot: requests interleave between them."""
    totals: dict[str, float] = {}
    held: list[list[str]] = []
    get = totals.get
    for slot in slots:
        (flat,) = await reader.execute(
            ("ZREVRANGE", slot.pop_all, "0", str(max_items - 1), "WITHSCORES"), timeout=timeout
        )
        members = flat[0::2]
        for item, score in zip(members, flat[1::2], strict=True):
            totals[item] = get(item, 0.0) + float(score)
        held.append(members)
    if len(totals) > max_items:
        totals = dict(heapq.nlargest(max_items, totals.items(), key=itemgetter(1)))
    return totals, held


async def _sum_stats(
    reader: Reader,
    slots: tuple[RedisKeys, ...],
    held: list[list[str]],
    features: dict[str, dict[str, float]],
    timeout: float | None,
) -> float:
    """Adds ``rating_count``/``rating_mean`` summed over the slots to ``features``; returns
    the newest ``last_seen``. A slot's stats are read only for the items its ``pop_all``
    holds: one script call counts an event in both keys of its slot, so a slot without an
    item's count has no stats of it either (a popularity entry trimmed off at the cap aside)."""
    n_rate: dict[str, float] = {}
    rating_sum: dict[str, float] = {}
    newest = 0.0
    for slot, items in zip(slots, held, strict=True):
        for start in range(0, len(items), _CHUNK):
            chunk = [item for item in items[start : start + _CHUNK] if item in features]
            if not chunk:
                continue
            replies = await reader.execute(
                *[("HMGET", slot.item_stats(item), *_STATS) for item in chunk], timeout=timeout
            )
            for item, (n, total, last_seen) in zip(chunk, replies, strict=True):
                if (n := _to_float(n)) is not None:
                    n_rate[item] = n_rate.get(item, 0.0) + n
                if (total := _to_float(total)) is not None:
                    rating_sum[item] = rating_sum.get(item, 0.0) + total
                newest = max(newest, _to_float(last_seen) or 0.0)
    for item, n in n_rate.items():
        if n:
            f = features[item]
            f["rating_count"] = n
            if item in rating_sum:
                f["rating_mean"] = rating_sum[item] / n
    return newest


def _add_days(sums: dict[int, dict[str, float]], days: list[list[str]]) -> None:
    """Adds one slot's daily buckets (``WITHSCORES`` replies, newest day first) to ``sums``:
    window in days -> item -> interactions within the window's newest days."""
    for d, flat in enumerate(days):
        for window, out in sums.items():
            if d < window:
                for item, score in zip(flat[0::2], flat[1::2], strict=True):
                    out[item] = out.get(item, 0.0) + float(score)


async def _sum_days(
    reader: Reader,
    slots: tuple[RedisKeys, ...],
    newest: float,
    features: dict[str, dict[str, float]],
    timeout: float | None,
) -> None:
    """Adds ``pop_7d``/``pop_30d``: the daily buckets of every slot, counted back from the
    newest event day (buckets are event-time days, replays of old data too, so the wall
    clock would be wrong). One read per slot."""
    sums: dict[int, dict[str, float]] = {window: {} for window in WINDOWS_DAYS}
    for slot in slots:
        days = await reader.execute(
            *[
                ("ZRANGE", slot.pop_day(newest - d * DAY_S), "0", "-1", "WITHSCORES")
                for d in range(max(WINDOWS_DAYS))
            ],
            timeout=timeout,
        )
        _add_days(sums, days)
    for window, out in sums.items():
        for item, value in out.items():
            if item in features:
                features[item][f"pop_{window}d"] = value


async def read_item_table(
    reader: Reader, keys: RedisKeys, *, max_items: int, timeout: float | None = None
) -> tuple[dict[str, dict[str, float]], list[tuple[str, float]]]:
    """(item -> live ranker features named as in ``models.features.ITEM_FEATURES``, the
    trending list), read in pipelined chunks on the request path's connection: hiredis
    parses the replies and requests interleave between chunks (a thread would hold the
    GIL for the whole parse and stall the event loop).

    Live values, summed over every partition's slot (``keys.all_slots()``): ``pop_all``
    (all-time interactions; the top ``max_items`` of the sum of each slot's top
    ``max_items``), ``rating_count``/``rating_mean`` (item stats) and ``pop_7d``/``pop_30d``
    (daily buckets, counted back from the newest event day). Features Redis cannot provide
    keep the model's frozen values."""
    slots = _slots(keys.base)
    (trending,) = await reader.execute(
        ("ZREVRANGE", keys.base.trending, "0", "-1", "WITHSCORES"), timeout=timeout
    )
    totals, held = await _sum_pop_all(reader, slots, max_items, timeout)
    features = {item: {"pop_all": count} for item, count in totals.items()}
    newest = await _sum_stats(reader, slots, held, features, timeout)
    if newest:
        await _sum_days(reader, slots, newest, features, timeout)
    return features, _pairs(trending)


@dataclass(slots=True)
class _Paced:
    """A reader that sleeps after each reply: the sweep's slices spread out, so requests
    interleave with one slice at a time instead of queueing behind a run of them. (The
    first sweep is not paced: /readyz waits for it and no traffic does.)"""

    reader: Reader
    pause_s: float

    async def execute(self, *commands: Command, timeout: float | None = None) -> list[Any]:
        got = await self.reader.execute(*commands, timeout=timeout)
        await asyncio.sleep(self.pause_s)
        return got


@dataclass
class ItemFeatureTable:
    """Item id -> live ranker features, plus the last trending list seen (so a Redis outage
    still falls back to recent popularity rather than none). Refreshed in the background.
    ``features`` is immutable (models memoise derived arrays on it): a change swaps it."""

    reader: Reader
    keys: RedisKeys
    max_items: int = 200_000
    timeout_s: float | None = None
    features: LiveItemFeatures = field(default_factory=lambda: LiveItemFeatures({}))
    _raw: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    trending: list[tuple[str, float]] = field(default_factory=list)
    refreshed_at: float | None = None  # monotonic time of the last complete sweep
    generation: int = 0  # bumped whenever the features change
    # Awaited with a changed table before it is swapped in: warms the loaded models on it
    # (each model turns a table into arrays on first use; a request must not pay that).
    prepare: Callable[[LiveItemFeatures], Awaitable[object]] | None = None
    # Set once the first sweep is in (and the models warmed on it): /readyz waits for it.
    swept: asyncio.Event = field(default_factory=asyncio.Event)

    async def refresh(self) -> int:
        """One sweep; after the first, paced (:data:`SWEEP_PAUSE_S` between round trips)."""
        reader = _Paced(self.reader, SWEEP_PAUSE_S) if self.swept.is_set() else self.reader
        features, trending = await read_item_table(
            reader, self.keys, max_items=self.max_items, timeout=self.timeout_s
        )
        if features != self._raw:
            table = LiveItemFeatures(features)
            if self.prepare is not None:
                await self.prepare(table)
            self.generation += 1  # memoised answers computed with the old table are void
            # Whole objects are swapped: a model call on another thread sees the old table
            # or the new one, never a half-built one.
            self._raw, self.features = features, table
        self.trending = trending
        self.refreshed_at = time.monotonic()
        self.swept.set()
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
