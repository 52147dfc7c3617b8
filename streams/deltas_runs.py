"""The deltas of a partition's watch or rate batch by runs, not events (issue 20).

A viewing session is many events of one user and one item in a row (the sessions workload:
~10 a session), and every delta of such a run is known from the run as a whole: its count,
its newest time, its ratings' sum and last rating, and -- when the run lies within one
hour -- one bucket increment. So the run boundaries are found at C speed (``map`` over the
user and item columns) and the Python step is per run. Batches whose runs are short (the
MovieLens replay: every event a new user-item pair) keep the per-event loop of
:func:`streams.features.compute_deltas`, which gives the same deltas.

Exactly the per-event loop's figures: maxima and counts are order-free; rating sums are
added a run at a time, which is the same float only when every partial sum is exact, so a
batch with a rating that is not a multiple of 0.5 goes the per-event way.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, pairwise
from operator import itemgetter, ne, or_
from typing import TYPE_CHECKING, Any

from streams.fast_decode import EventRecord

if TYPE_CHECKING:
    from streams.features import Deltas

_TYPE, _USER, _ITEM, _EPOCH, _RATING = (itemgetter(j) for j in (0, 2, 3, 5, 9))
# Mean run length, in a sample of the batch's first events, below which runs do not pay
# (the per-run step costs about three events' steps).
MIN_RUN = 3
_SAMPLE = 64
# Within a millisecond of the hour's end a time may round up into the next hour (times are
# kept to the millisecond); streams.features' per-event loop uses it inline.
HOUR_END = 3600 - 0.001


def hour_of(ts: float) -> int:
    """The hour bucket of ``ts`` rounded to the millisecond (round() only near the end)."""
    h = int(ts // 3600)
    return int(round(ts, 3) // 3600) if ts - h * 3600 >= HOUR_END else h


def _starts(users: list[str], items: list[str]) -> list[int]:
    """Where a new (user, item) run begins, plus ``len(users)`` at the end."""
    changed = map(or_, map(ne, users[1:], users[:-1]), map(ne, items[1:], items[:-1]))
    return [0, *compress(range(1, len(users)), changed), len(users)]


def _worth_it(evs: Sequence[Any]) -> bool:
    m = min(len(evs), _SAMPLE)
    head = evs[:m]
    runs = len(_starts(list(map(_USER, head)), list(map(_ITEM, head)))) - 1
    return runs * MIN_RUN <= m


def add_runs(
    d: Deltas, evs: Sequence[Any], new_user: type, new_item: type, exact_sums: bool = True
) -> bool:
    """Add ``evs`` (one partition's batch, offset order) to ``d`` run by run; False (and
    ``d`` untouched) if they are not all watch or all rate records or runs would not pay.
    ``exact_sums``: ``d``'s rating sums are exact (nothing but this function added to them),
    so a run's ratings may be summed first."""
    n = len(evs)
    if n < 2 * MIN_RUN or type(evs[0]) is not EventRecord or not _worth_it(evs):
        return False
    etype = evs[0][0]
    if etype not in ("watch", "rate") or set(map(type, evs)) != {EventRecord}:
        return False
    if list(map(_TYPE, evs)).count(etype) != n:
        return False
    watch = etype == "watch"
    ratings: list[float] = [] if watch else list(map(_RATING, evs))
    if not watch and not all(map(float.is_integer, map((2.0).__mul__, ratings))):
        return False  # (ratings are bounded, 0-5: their sums stay small)
    users, items = list(map(_USER, evs)), list(map(_ITEM, evs))
    epochs: list[float] = list(map(_EPOCH, evs))
    u_of, i_of, pop_all, pop_hour, pop_day = d.users, d.items, d.pop_all, d.pop_hour, d.pop_day
    last_h = last_d = -1
    hour: dict[str, int] = pop_all
    day: dict[str, int] = pop_all
    for a, b in pairwise(_starts(users, items)):
        user, item, c = users[a], items[a], b - a
        if c == 1:
            lo = hi = epochs[a]
        else:
            run = epochs[a:b]
            lo, hi = min(run), max(run)
        u = u_of.get(user)
        if u is None:
            u = u_of[user] = new_user()
        if hi > u.last_active:
            u.last_active = hi
        recent = u.recent
        if hi > recent.get(item, -1.0):
            recent[item] = hi
        u.items[item] = u.items.get(item, 0) + c
        i = i_of.get(item)
        if i is None:
            i = i_of[item] = new_item()
        if watch:
            u.n_watch += c
            i.n_watch += c
        else:
            u.n_rate += c
            i.n_rate += c
            if c == 1:
                u.rating_sum += ratings[a]
                i.rating_sum += ratings[a]
            elif exact_sums:
                rs = sum(ratings[a:b])
                u.rating_sum += rs
                i.rating_sum += rs
            else:  # an earlier batch of the call went event by event: the same order
                for r in ratings[a:b]:
                    u.rating_sum += r
                    i.rating_sum += r
            u.ratings[item] = ratings[b - 1]
        if hi > i.last_seen:
            i.last_seen = hi
        # The bucket's hour is monotonic in the time: one hour for the run's oldest and
        # newest time is the hour of all of it.
        h_lo, h_hi = hour_of(lo), hour_of(hi)
        for h, k in ((h_lo, c),) if h_lo == h_hi else [(hour_of(t), 1) for t in epochs[a:b]]:
            if h != last_h:
                last_h, hour = h, pop_hour.setdefault(h, {})
                if h // 24 != last_d:
                    last_d, day = h // 24, pop_day.setdefault(h // 24, {})
            hour[item] = hour.get(item, 0) + k
            day[item] = day.get(item, 0) + k
        pop_all[item] = pop_all.get(item, 0) + c
    d.n_events += n
    return True
