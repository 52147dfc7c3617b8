"""The deltas by runs (streams.deltas_runs) are the per-event loop's, figure for figure."""

from __future__ import annotations

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
