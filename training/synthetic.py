"""Snapshot files in the exact :mod:`schemas.snapshots` layout, written directly (without
Kafka) from arrays: for tests of the trainer on its own and for the benchmark's synthetic
interaction sets (power-law item popularity)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.storage import ObjectStore
from schemas.events import make_event_id
from schemas.snapshots import SnapshotFile, arrow_schema

DAY_S = 86_400


@dataclass
class EventArrays:
    users: np.ndarray  # str ids
    items: np.ndarray  # str ids
    ts: np.ndarray  # int64 epoch seconds
    ratings: np.ndarray | None = None  # float32; None: watch events
    event_ids: np.ndarray | None = None  # str; None: derived from the event's content

    def __len__(self) -> int:
        return len(self.users)


def write_snapshots(
    store: ObjectStore,
    events: EventArrays,
    *,
    event_type: str = "rate",
    partitions: int = 4,
    max_rows: int = 250_000,
    first_offset: int = 0,
) -> list[str]:
    """Write ``events`` as snapshot files: one file per (partition, event day), at most
    ``max_rows`` rows each, users hashed to partitions, offsets counting up per partition
    in time order from ``first_offset`` (as a Kafka replay would produce them; a later batch
    written separately needs a higher one). Returns the keys written."""
    if event_type not in ("rate", "watch"):
        raise ValueError(f"event_type must be rate or watch, got {event_type!r}")
    if event_type == "rate" and events.ratings is None:
        raise ValueError("rate events need ratings")
    order = np.argsort(events.ts, kind="stable")
    users = np.asarray(events.users)[order]
    items = np.asarray(events.items)[order]
    ts = np.asarray(events.ts, dtype=np.int64)[order]
    ratings = None if events.ratings is None else np.asarray(events.ratings, np.float32)[order]
    given_ids = None if events.event_ids is None else np.asarray(events.event_ids)[order]
    user_codes, inverse = np.unique(users, return_inverse=True)
    part_of_user = np.asarray([hash_partition(u, partitions) for u in user_codes.tolist()])
    part = part_of_user[inverse]
    schema = arrow_schema(event_type)
    keys = []
    for p in range(partitions):
        rows = np.flatnonzero(part == p)
        if rows.size == 0:
            continue
        offsets = first_offset + np.arange(len(rows), dtype=np.int64)
        days = ts[rows] // DAY_S
        cuts = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True])
        for a, b in pairwise(cuts.tolist()):
            for lo in range(a, b, max_rows):
                hi = min(lo + max_rows, b)
                idx = rows[lo:hi]
                if given_ids is not None:
                    event_ids = pa.array(given_ids[idx].astype(str))
                else:
                    event_ids = [
                        make_event_id(event_type, u, i, t)
                        for u, i, t in zip(users[idx], items[idx], ts[idx].tolist(), strict=True)
                    ]
                cols = {
                    "event_id": event_ids,
                    "user_id": pa.array(users[idx].astype(str)),
                    "ts": pa.array(ts[idx] * 1_000_000, pa.int64()).cast(schema.field("ts").type),
                    "schema_version": np.ones(hi - lo, np.int16),
                    "item_id": pa.array(items[idx].astype(str)),
                    "kafka_partition": np.full(hi - lo, p, np.int32),
                    "kafka_offset": offsets[lo:hi],
                }  # fmt: skip
                if ratings is not None:  # rate events (checked above: they have ratings)
                    cols["rating"] = ratings[idx]
                else:
                    cols["minute"] = pa.nulls(hi - lo, pa.int32())
                    cols["seconds"] = pa.nulls(hi - lo, pa.float64())
                table = pa.table({f.name: cols[f.name] for f in schema}, schema=schema)
                day = np.datetime64(int(days[lo]), "D").astype(object)
                # Arrival date = event day, as a live stream writes them.
                snap = SnapshotFile.of_rows(
                    event_type,
                    day,
                    p,
                    (int(offsets[lo]), int(offsets[hi - 1])),
                    (int(ts[idx].min()) * 1_000_000, int(ts[idx].max()) * 1_000_000),
                )
                sink = pa.BufferOutputStream()
                pq.write_table(table, sink, compression="zstd")
                store.put(snap.key, sink.getvalue().to_pybytes())
                keys.append(snap.key)
    return keys


def hash_partition(user: str, partitions: int) -> int:
    # Stable across processes (unlike hash()); Kafka's murmur2 is not needed for a test layout.
    return int.from_bytes(user.encode()[-4:].rjust(4, b"\0"), "big") % partitions


def power_law_events(
    n_events: int,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
    exponent: float = 1.1,
    days: int = 90,
    start: int = 1_700_000_000,
    seed: int = 0,
) -> EventArrays:
    """Synthetic ratings: item popularity Zipf-like (rank ** -exponent), user activity
    log-normal, a mild taste structure (users prefer one of 20 item clusters), timestamps
    uniform over ``days``. Sizes default to MovieLens-like ratios."""
    rng = np.random.default_rng(seed)
    n_users = n_users or max(100, n_events // 100)
    n_items = n_items or max(200, int(n_events**0.5) * 4)
    item_p = (np.arange(1, n_items + 1, dtype=np.float64)) ** -exponent
    item_p /= item_p.sum()
    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    clusters = 20
    item_cluster = rng.integers(0, clusters, n_items)
    user_cluster = rng.integers(0, clusters, n_users)
    items = rng.choice(n_items, size=n_events, p=item_p)
    # Half of the events are redrawn from the user's favourite cluster: learnable taste.
    taste = rng.random(n_events) < 0.5
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    for c in range(clusters):
        pick = taste & (user_cluster[users] == c)
        pool = by_cluster[c]
        if pick.any() and pool.size:
            w = item_p[pool] / item_p[pool].sum()
            items[pick] = rng.choice(pool, size=int(pick.sum()), p=w)
    ts = start + rng.integers(0, days * DAY_S, n_events)
    ratings = np.clip(np.round(rng.normal(3.6, 1.0, n_events)), 1, 5).astype(np.float32)
    return EventArrays(
        np.char.add("u", users.astype(str)),
        np.char.add("m", items.astype(str)),
        ts.astype(np.int64),
        ratings,
        np.char.add("e", np.arange(n_events).astype(str)),
    )


def _row_searchsorted(cdf: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-row ``searchsorted(cdf[row], value)`` for many (row, value) pairs at once: each
    row of the (non-decreasing) ``cdf`` is shifted above the previous one and flattened."""
    n_cols = cdf.shape[1]
    shift = np.arange(cdf.shape[0], dtype=np.float64) * (float(cdf.max()) + 1.0)
    flat = (cdf + shift[:, None]).ravel()
    idx = np.searchsorted(flat, values + shift[rows], side="right")
    return np.minimum(idx - rows * n_cols, n_cols - 1)


def structured_events(
    n_events: int,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
    topics: int = 30,
    exponent: float = 1.1,
    days: int = 90,
    session_mean: float = 4.0,
    seq_prob: float = 0.5,
    start: int = 1_700_000_000,
    seed: int = 0,
    part: int = 0,
    first_user: int = 0,
) -> EventArrays:
    """Synthetic ratings with the structure real logs have (``power_law_events`` is the
    uniform negative control):

    - latent tastes: items belong to one of ``topics``; each user's sessions pick a topic
      from the user's sparse Dirichlet taste;
    - popularity over time: each item launches on some day (before or during the window),
      rises over a few days and decays with its own half-life, on top of a Zipf appeal;
    - sessions: a user's events come in sessions (geometric length, mean ``session_mean``)
      minutes apart, on the session's day;
    - sequential dependence: with probability ``seq_prob`` the next item of a session is the
      successor of the previous one (items of a topic form chains, like a series).

    Fully vectorised (no Python loop per event). Large sets are made in parts sharing one
    item world (same ``seed`` and ``n_items``): each ``part`` draws its own users, named
    from ``first_user`` on, and its own sessions."""
    rng = np.random.default_rng(seed)
    n_users = n_users or max(100, n_events // 100)
    n_items = n_items or max(200, int(n_events**0.5) * 4)
    topics = max(1, min(topics, n_items // 5))
    # Items are laid out by topic (contiguous ranges) so a topic's items are one CDF slice.
    topic_of = np.sort(rng.integers(0, topics, n_items))
    t_lo = np.searchsorted(topic_of, np.arange(topics), side="left")
    t_hi = np.searchsorted(topic_of, np.arange(topics), side="right")
    appeal = rng.permutation(np.arange(1, n_items + 1, dtype=np.float64) ** -exponent)
    launch = rng.uniform(-days, days, n_items)
    half_life = rng.lognormal(np.log(15.0), 0.6, n_items)
    if part:
        rng = np.random.default_rng([seed, part])  # users and sessions of this part only
    age = np.arange(days, dtype=np.float64)[:, None] - launch[None, :]  # days x items
    life = np.where(
        age >= 0, (1 - np.exp(-np.maximum(age, 0) / 2.0)) * np.exp2(-age / half_life), 0
    )
    weight = appeal[None, :] * life + 1e-12
    cdf = np.cumsum(weight, axis=1)
    # Sessions: users by log-normal activity, a day each, geometric lengths.
    lengths = rng.geometric(1.0 / session_mean, size=int(n_events / session_mean * 1.2) + 10)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n_events)) + 1]
    lengths[-1] -= int(lengths.sum()) - n_events
    n_sessions = len(lengths)
    activity = rng.lognormal(0.0, 1.0, n_users)
    s_user = rng.choice(n_users, size=n_sessions, p=activity / activity.sum())
    s_day = rng.integers(0, days, n_sessions)
    s_start = s_day * DAY_S + rng.integers(0, DAY_S - 3600, n_sessions)
    taste = np.cumsum(rng.dirichlet(np.full(topics, 0.2), size=n_users), axis=1)
    s_topic = _row_searchsorted(taste, s_user, rng.random(n_sessions) * taste[s_user, -1])
    succ = np.roll(np.arange(n_items), -1)  # the next item of the same topic, cyclically
    succ[t_hi[t_hi > t_lo] - 1] = t_lo[t_hi > t_lo]

    def draw(day: np.ndarray, topic: np.ndarray) -> np.ndarray:
        lo = np.where(t_lo[topic] > 0, cdf[day, np.maximum(t_lo[topic] - 1, 0)], 0.0)
        hi = cdf[day, t_hi[topic] - 1]
        return _row_searchsorted(cdf, day, lo + rng.random(len(day)) * (hi - lo))

    # Event k of every session at once; position p is generated from position p - 1.
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(n_events) - np.repeat(first, lengths)
    sess = np.repeat(np.arange(n_sessions), lengths)
    items = np.empty(n_events, dtype=np.int64)
    by_pos = np.argsort(pos, kind="stable")  # event indices grouped by position
    bounds = np.r_[0, np.cumsum(np.bincount(pos))]
    for p in range(len(bounds) - 1):
        at = by_pos[bounds[p] : bounds[p + 1]]
        fresh = draw(s_day[sess[at]], s_topic[sess[at]])
        if p == 0:
            items[at] = fresh
        else:
            items[at] = np.where(rng.random(len(at)) < seq_prob, succ[items[at - 1]], fresh)
    gaps = rng.exponential(300.0, n_events).astype(np.int64) + 30
    ts = (
        start
        + s_start[sess]
        + (np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], lengths))
    )
    del by_pos, pos, gaps  # the id strings below need the room
    ratings = np.clip(np.round(rng.normal(3.6, 1.0, n_events)), 1, 5).astype(np.float32)
    return EventArrays(
        np.char.add("u", (first_user + s_user[sess]).astype(str)),
        np.char.add("m", items.astype(str)),
        ts.astype(np.int64),
        ratings,
        np.char.add(f"e{part}-" if part else "e", np.arange(n_events).astype(str)),
    )
