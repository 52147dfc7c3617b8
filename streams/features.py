"""Real-time features: a partition's batch of events -> aggregated deltas -> one payload.

Pure (no I/O), so it is unit-testable without Redis. Deltas are aggregated per key within a
batch (one HINCRBY per user field, one ZINCRBY per bucket and item), which keeps the Redis
cost per event low. Every update commutes with those of other partitions' batches
(increments, max-updates, ``ZADD GT``), so per-partition watermarks are enough for
idempotency. The payload is one JSON document that the apply script in
:mod:`streams.redis_sink` decodes with ``cjson``: the key names are built here, from
:class:`schemas.redis_keys.RedisKeys`, the layout's one definition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING

import orjson

from core.config import StreamSettings
from schemas import redis_keys as rk
from schemas.events import Event
from schemas.redis_keys import RedisKeys
from streams.deltas_runs import HOUR_END, add_runs, hour_of

if TYPE_CHECKING:
    from streams.fast_decode import EventRecord

INTERACTIONS = frozenset({"watch", "rate"})
ACTIVITY = frozenset({"watch", "rate", "feedback", "reco_request"})


@dataclass(frozen=True)
class Limits:
    """Caps and TTLs: the stream section's (whose defaults are these, the key layout's)."""

    recent_cap: int = rk.USER_RECENT_CAP
    user_ttl_s: int = rk.USER_TTL_S
    item_ttl_s: int = rk.ITEM_TTL_S
    pop_hour_ttl_s: int = rk.POP_HOUR_TTL_S
    pop_day_ttl_s: int = rk.POP_DAY_TTL_S
    pop_cap: int = rk.POP_CAP

    @classmethod
    def from_settings(cls, stream: StreamSettings) -> Limits:
        return cls(
            recent_cap=stream.user_recent_cap,
            user_ttl_s=stream.user_ttl_s,
            item_ttl_s=stream.item_ttl_s,
            pop_hour_ttl_s=stream.pop_hour_ttl_s,
            pop_day_ttl_s=stream.pop_day_ttl_s,
            pop_cap=stream.pop_cap,
        )


class UserDelta:
    __slots__ = (
        "genres",
        "items",
        "last_active",
        "n_rate",
        "n_watch",
        "rating_sum",
        "ratings",
        "recent",
    )

    def __init__(self) -> None:
        self.n_watch = 0
        self.n_rate = 0
        self.rating_sum = 0.0
        self.last_active = -1.0
        self.recent: dict[str, float] = {}  # item -> newest interaction epoch
        self.ratings: dict[str, float] = {}  # item -> latest rating (offset order)
        self.genres: dict[str, int] = {}
        self.items: dict[str, int] = {}  # item -> interactions (the genres' source)


class ItemDelta:
    __slots__ = ("last_seen", "n_rate", "n_watch", "rating_sum")

    def __init__(self) -> None:
        self.n_watch = 0
        self.n_rate = 0
        self.rating_sum = 0.0
        self.last_seen = -1.0


@dataclass
class Deltas:
    """What one batch changes, aggregated per key. Hours/days are event-time bucket
    numbers (epoch // 3600, epoch // 86400)."""

    users: dict[str, UserDelta] = field(default_factory=dict)
    items: dict[str, ItemDelta] = field(default_factory=dict)
    pop_hour: dict[int, dict[str, int]] = field(default_factory=dict)
    pop_day: dict[int, dict[str, int]] = field(default_factory=dict)
    pop_all: dict[str, int] = field(default_factory=dict)
    max_ts: float = 0.0
    n_events: int = 0


def _ms(t: float) -> float:
    """``t`` rounded to the millisecond: ``round(t, 3)`` exactly, at ~2/3 of its cost
    (most event times are whole seconds: no rounding at all). Below 4e9, ``t * 1000`` is
    within 2.5e-4 of its exact value, so when that product is not within 0.49 of a half the
    nearest integer ``k`` is the exact product's, no tie, and ``k / 1000`` (a correctly
    rounded division) is the double ``round(t, 3)`` parses from its digits; near a half,
    ``round`` decides."""
    if t == int(t):
        return t
    y = t * 1000.0
    k = round(y)
    if -0.49 < y - k < 0.49 and 0.0 < t < 4e9:
        return k / 1000
    return round(t, 3)


def compute_deltas(
    events: Iterable[Event | EventRecord], genres_of: Mapping[str, Sequence[str]] | None = None
) -> Deltas:
    """Aggregate a batch of events (in offset order) into per-key deltas."""
    return compute_deltas_parts([events], genres_of)


def compute_deltas_parts(
    parts: Iterable[Iterable[Event | EventRecord]],
    genres_of: Mapping[str, Sequence[str]] | None = None,
) -> Deltas:
    """Aggregate partition batches (each in offset order, one after the other) into per-key
    deltas: a batch of long user-item runs run by run (:mod:`streams.deltas_runs`), the
    others event by event."""
    d = Deltas()
    exact = True  # the rating sums hold only runs' sums of multiples of 0.5 (or nothing)
    for events in parts:
        if not (isinstance(events, list) and add_runs(d, events, UserDelta, ItemDelta, exact)):
            _add_events(d, events)
            exact = False
    return _finish(d, genres_of or {})


def _add_events(d: Deltas, events: Iterable[Event | EventRecord]) -> None:
    users, items, pop_all, pop_hour, pop_day = d.users, d.items, d.pop_all, d.pop_hour, d.pop_day
    # Events come in time order, so the hour and day of the last event usually match.
    last_h = last_d = -1
    hour = day = pop_all
    n = 0
    for ev in events:
        n += 1
        etype = ev.event_type
        if etype not in ACTIVITY:
            continue
        # Times are kept to the millisecond: rounded once per key below, not per event here
        # (round() was a fifth of this phase on times with microseconds); the maxima are
        # the same, as rounding keeps order.
        ts = ev.epoch
        uid = ev.user_id
        u = users.get(uid)
        if u is None:
            u = users[uid] = UserDelta()
        if ts > u.last_active:
            u.last_active = ts
        if etype not in INTERACTIONS:
            continue
        item = ev.item_id  # type: ignore[union-attr]  # an interaction: it has one
        recent = u.recent
        if ts > recent.get(item, -1.0):
            recent[item] = ts
        u.items[item] = u.items.get(item, 0) + 1
        i = items.get(item)
        if i is None:
            i = items[item] = ItemDelta()
        if etype == "watch":
            u.n_watch += 1
            i.n_watch += 1
        else:
            # A rate event (validated: its rating is set); no cast, this loop is hot.
            rating: float = ev.rating  # type: ignore[union-attr, assignment]
            u.n_rate += 1
            u.rating_sum += rating
            i.n_rate += 1
            i.rating_sum += rating
            u.ratings[item] = rating
        if ts > i.last_seen:
            i.last_seen = ts
        h = int(ts // 3600)
        if ts - h * 3600 >= HOUR_END:  # hour_of(ts), inline: this loop runs per event
            h = hour_of(ts)
        if h != last_h:
            last_h, hour = h, pop_hour.setdefault(h, {})
            if h // 24 != last_d:
                last_d, day = h // 24, pop_day.setdefault(h // 24, {})
        hour[item] = hour.get(item, 0) + 1
        day[item] = day.get(item, 0) + 1
        pop_all[item] = pop_all.get(item, 0) + 1
    d.n_events += n


def _finish(d: Deltas, genres_of: Mapping[str, Sequence[str]]) -> Deltas:
    users, items = d.users, d.items
    for i in items.values():
        i.last_seen = _ms(i.last_seen)
    for u in users.values():
        u.last_active = _ms(u.last_active)
        recent = u.recent
        for item, t in recent.items():
            if t != int(t):
                recent[item] = _ms(t)
        if u.last_active > d.max_ts:
            d.max_ts = u.last_active
        genres = u.genres
        for item, c in u.items.items():  # per distinct item, not per event
            for genre in genres_of.get(item, ()):
                genres[genre] = genres.get(genre, 0) + c
    return d


def _flat(mapping: Mapping[str, float | int], score_first: bool = False) -> list:
    # chain/zip run at C speed: half the time of a Python loop on the payload's big maps.
    if score_first:
        return list(chain.from_iterable(zip(mapping.values(), mapping, strict=True)))
    return list(chain.from_iterable(mapping.items()))


class TtlTracker:
    """Keys whose TTL this worker refreshed less than ``refresh_s`` ago: their EXPIRE can
    wait. An EXPIRE per key and batch was about a third of the apply script's Redis calls.
    Only keys that are never emptied by the script are tracked (the ratings hash, whose
    fields are trimmed away with the history, is refreshed on every write), so a tracked key
    always still carries the TTL set at most ``refresh_s`` ago (refresh_s << every TTL)."""

    def __init__(
        self,
        refresh_s: float,
        max_keys: int = 2_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_s = refresh_s
        self.max_keys = max_keys
        self.clock = clock
        self._at: dict[str, float] = {}

    def __contains__(self, key: object) -> bool:
        at = self._at.get(key)  # type: ignore[call-overload]
        return at is not None and self.clock() - at < self.refresh_s

    def checker(self) -> Callable[[str], bool]:
        """``key in self`` as of now, for many keys: one clock reading, not one per key."""
        at, since = self._at.get, self.clock() - self.refresh_s
        return lambda key: (t := at(key)) is not None and t > since

    def __len__(self) -> int:
        return len(self._at)

    def confirm(self, keys: Sequence[str]) -> None:
        """Record keys whose EXPIRE was applied (call after the script succeeded)."""
        if len(self._at) + len(keys) > self.max_keys:
            self._at.clear()  # bounded memory; forgetting only costs an early refresh
        now = self.clock()
        for k in keys:
            self._at[k] = now


def to_payload(
    d: Deltas,
    keys: RedisKeys,
    limits: Limits,
    now: float,
    *,
    fresh: Container[str] = (),
    refreshed: list[str] | None = None,
    dedupe: list | None = None,
    dedupe_ttl: int = rk.DEDUPE_TTL_S,
) -> bytes:
    """The batch as the JSON document the apply script expects::

    {"now", "cap", "pc", "ttl": [user, item, hour, day],
     "k": [[head, tail] of a user's stats, recent, ratings and genres key, of an item's stats],
     "u": [[user, n_watch, n_rate, rating_sum, last_active,
            [score, item, ...], [item, rating, ...] or 0, [genre, n, ...] or 0,
            expire stats? + 2 * expire recent? + 4 * expire genres?], ...],
     "i": [[item, n_watch, n_rate, rating_sum, last_seen, expire?], ...],
     "h": [[key, [n, item, ...], expire?], ...], "d": [...], "a": [key, [n, item, ...]],
     "dd": [per partition: streams.dedupe.dedupe_plan(...)], "dd_ttl"}

    Keys in ``fresh`` get no EXPIRE (0 flags); those that do are appended to ``refreshed``.
    ``dedupe`` (one plan per partition of the call, in order; None: no id dedupe).
    The script builds the users' and items' key names from their ids and ``k`` (a key is
    ``head + id + tail``): a new user's four full key names were ~70% of the payload that
    Redis reads and decodes (freshness runs, where nearly every event is a new user); and
    for the same reason no lists where a number does (each is a Lua table to build).
    """
    out = refreshed if refreshed is not None else []
    is_fresh = fresh.checker() if isinstance(fresh, TtlTracker) else fresh.__contains__

    def expire(key: str, written: bool = True) -> int:
        if not written or is_fresh(key):
            return 0
        out.append(key)
        return 1

    # The loop below runs once per user of the batch (up to one per event): names bound
    # once, the common one-item history and empty ratings / genres without a call.
    users: list[list[object]] = []
    add_user, append = users.append, out.append
    stats_key, recent_key = keys.user_stats, keys.user_recent
    genres_key = keys.user_genres
    for user, u in d.users.items():
        sk, rk, gk = stats_key(user), recent_key(user), genres_key(user)
        recent, genres = u.recent, u.genres
        if is_fresh(sk):
            x_sk = 0
        else:
            append(sk)
            x_sk = 1
        if not recent or is_fresh(rk):
            x_rk = 0
        else:
            append(rk)
            x_rk = 1
        if not genres or is_fresh(gk):
            x_gk = 0
        else:
            append(gk)
            x_gk = 1
        add_user(
            [
                user,
                u.n_watch,
                u.n_rate,
                u.rating_sum,
                u.last_active,
                [*recent.values(), *recent] if len(recent) == 1 else _flat(recent, True),
                _flat(u.ratings) if u.ratings else 0,
                _flat(genres) if genres else 0,
                x_sk + 2 * x_rk + 4 * x_gk,
            ]
        )
    items = []
    for item, i in d.items.items():
        k = keys.item_stats(item)
        items.append([item, i.n_watch, i.n_rate, i.rating_sum, i.last_seen, expire(k)])
    hours = [(keys.pop_hour(h * 3600), c) for h, c in d.pop_hour.items()]
    days = [(keys.pop_day(x * 86400), c) for x, c in d.pop_day.items()]
    doc: dict[str, object] = {
        "now": round(now, 3),
        "cap": limits.recent_cap,
        "pc": limits.pop_cap,
        "ttl": [limits.user_ttl_s, limits.item_ttl_s, limits.pop_hour_ttl_s, limits.pop_day_ttl_s],
        "k": [
            _head_tail(f)
            for f in (stats_key, recent_key, keys.user_ratings, genres_key, keys.item_stats)
        ],
        "u": users,
        "i": items,
        "h": [[k, _flat(c, True), expire(k)] for k, c in hours],
        "d": [[k, _flat(c, True), expire(k)] for k, c in days],
        "a": [keys.pop_all, _flat(d.pop_all, True)],
    }
    if dedupe is not None:
        doc["dd"], doc["dd_ttl"] = dedupe, dedupe_ttl
    return orjson.dumps(doc)


def _head_tail(key_of: Callable[[str], str]) -> list[str]:
    """[head, tail] of the names ``key_of`` gives: ``key_of(x) == head + x + tail``."""
    head, tail = key_of("\0").split("\0")
    return [head, tail]


def trending_plan(
    keys: RedisKeys,
    ref_epoch: float,
    hours: int = rk.TRENDING_HOURS,
    half_life_h: float = rk.TRENDING_HALF_LIFE_H,
) -> list[tuple[str, float]]:
    """The hourly buckets making up the trending set at event time ``ref_epoch`` and their
    decay weights: ``0.5 ** (age_hours / half_life)`` for the last ``hours`` buckets."""
    ref_hour = int(ref_epoch // 3600)
    return [
        (slot.pop_hour((ref_hour - age) * 3600), 0.5 ** (age / half_life_h))
        for slot in keys.all_slots()  # every partition's buckets (schemas.redis_keys)
        for age in range(hours)
    ]
