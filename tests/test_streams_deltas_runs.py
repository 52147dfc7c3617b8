"""The deltas by runs (streams.deltas_runs) are the per-event loop's, figure for figure."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

from streams import features as f
from streams.fast_decode import EventRecord

GENRES = {"m1": ["a", "b"], "m2": ["c"]}


def _rec(etype: str, user: str, item: str, ts: float, rating: float | None) -> EventRecord:
    return EventRecord(etype, "e", user, item, datetime.fromtimestamp(ts, UTC), ts, rating=rating)


def _figures(d: f.Deltas) -> tuple:
    users = {
        k: (v.n_watch, v.n_rate, v.rating_sum, v.last_active, v.recent, v.ratings, v.genres)
        for k, v in d.users.items()
    }
    items = {k: (v.n_watch, v.n_rate, v.rating_sum, v.last_seen) for k, v in d.items.items()}
    return users, items, d.pop_hour, d.pop_day, d.pop_all, d.max_ts, d.n_events


def _batch(rng: random.Random, etype: str) -> list[EventRecord]:
    # Sessions of one user and item, times that step back, repeat, cross hour ends (also
    # within a millisecond of one) and odd ratings now and then.
    out = []
    ts = rng.choice([3600 * 400_000 - 50.0, 1.7e9, 3600 * 400_000 - 0.0004])
    for _ in range(rng.randint(0, 120)):
        user, item = f"u{rng.randrange(rng.choice([3, 50]))}", f"m{rng.randrange(30)}"
        for _ in range(rng.randint(1, 15)):
            ts += rng.choice([0.01, 0.0001, 1.0, -0.5, 0.0, 7.1234567])
            rating = None
            if etype == "rate":
                rating = rng.choice([1.0, 2.5, 5.0, 0.0]) if rng.random() < 0.99 else 3.7
            out.append(_rec(etype, user, item, ts, rating))
    return out


def test_runs_give_the_per_event_loops_deltas() -> None:
    rng = random.Random(7)
    by_runs = 0
    for _ in range(100):
        parts = [_batch(rng, "watch"), _batch(rng, "rate")]
        rng.shuffle(parts)
        one_by_one = f.Deltas()
        for part in parts:
            f._add_events(one_by_one, part)
        expected = _figures(f._finish(one_by_one, GENRES))
        assert _figures(f.compute_deltas_parts(parts, GENRES)) == expected
        by_runs += sum(f.add_runs(f.Deltas(), p, f.UserDelta, f.ItemDelta) for p in parts)
    assert by_runs > 100  # the run path was taken (most batches), not only the fallback


def test_millisecond_rounding_is_round_to_3_digits() -> None:
    rng = random.Random(11)
    times = [rng.uniform(0, 5e9) for _ in range(20_000)]
    times += [rng.randrange(10**12) / 1e6 for _ in range(20_000)]  # microsecond times
    # the halves (and a hair either side), whole seconds, the bounds, negative times
    halves = [(rng.randrange(4 * 10**12) + 0.5) / 1000 for _ in range(5_000)]
    times += (
        halves + [math.nextafter(t, 0) for t in halves] + [math.nextafter(t, 1e10) for t in halves]
    )
    times += [0.0, 0.0005, 1.0, 4e9 - 0.0005, 4e9 + 0.0005, 1.7e9, -1.0, -0.0015, 1e15 + 0.5]
    assert [f._ms(t) for t in times] == [t if t == int(t) else round(t, 3) for t in times]
