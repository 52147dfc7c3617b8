"""Idempotence per event id (pure; the Redis side is in :mod:`streams.apply_script`).

The offset watermark makes a re-delivered *offset* a no-op; this makes a re-sent *event id*
at a new offset (a producer retrying after a timeout, a replayed file) one too, within a
bounded window: the ids applied for a partition are kept in Redis sets of half-window
buckets of offsets, ``{p}:seen:{topic}:{partition}:{offset // (window / 2)}``. A batch looks
its ids up in the buckets from two before its first offset's bucket to its last offset's
bucket -- that covers at least the previous ``window`` offsets -- inside the same script
that applies its features, so the check and the write are one atomic step. Buckets three or
more behind are deleted as the partition moves on (and every bucket has a TTL), so a
partition keeps at most about twice ``window`` ids.

Ids repeated *within* a batch are dropped here before the features are aggregated (first
occurrence wins, as for a re-send across batches). Parquet snapshots keep every row (they
are the log, named by offsets); the trainer drops repeated ids when it reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.redis_keys import RedisKeys


def repeats(ids: Sequence[str]) -> set[int]:
    """Positions of ids already seen earlier in ``ids``."""
    if len(set(ids)) == len(ids):  # the common case, at C speed
        return set()
    seen: set[str] = set()
    out = set()
    for j, i in enumerate(ids):
        if i in seen:
            out.add(j)
        seen.add(i)
    return out


def dedupe_plan(
    keys: RedisKeys,
    topic: str,
    partition: int,
    ids: Sequence[str],
    offsets: Sequence[int],
    window: int,
) -> list:
    """``[keys to look the ids up in, [[bucket key, [ids]], ...], keys to delete]`` for one
    partition's batch (ids in offset order, without repeats), as the apply script takes it."""
    if not ids:
        return [[], [], []]
    size = max(1, window // 2)
    lo, hi = offsets[0] // size, offsets[-1] // size
    if lo == hi:
        groups = {lo: list(ids)}
    else:
        groups = {}
        for i, o in zip(ids, offsets, strict=True):
            groups.setdefault(o // size, []).append(i)
    key = keys.seen_ids
    return [
        [key(topic, partition, b) for b in range(max(0, lo - 2), hi + 1)],
        [[key(topic, partition, b), g] for b, g in groups.items()],
        [key(topic, partition, b) for b in range(max(0, lo - 3), max(0, hi - 2))],
    ]
