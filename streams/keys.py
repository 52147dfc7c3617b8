"""Events must be keyed by their ``user_id`` (pure; no I/O).

Producers key every event by user (:attr:`schemas.events.Event.key`), so a user's events
stay in one partition, in order -- and the worker relies on it: the offset watermarks and
the event-id dedupe sets are per partition, so the same event sent under another key lands
in another partition and would be counted again there. An event whose Kafka key is not its
``user_id`` encoded as UTF-8 (or has no key) is therefore a dead letter with the reason
``key mismatch``, never applied; re-keying it instead would apply it out of its user's
order, in a partition whose dedupe never saw its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, itemgetter

from schemas.dead_letter import DeadLetter
from streams.decode import Decoded, RawRecord

MISMATCH = "key mismatch"
_SHOWN = 64  # characters of a key quoted in the reason
_user = attrgetter("user_id")
_key = itemgetter(1)


def _reason(key: bytes | None, user_id: str) -> str:
    if key is None:
        return f"{MISMATCH}: the record has no key; events are keyed by user_id {user_id!r}"
    shown = key[:_SHOWN].decode(errors="replace") + ("..." if len(key) > _SHOWN else "")
    return f"{MISMATCH}: key {shown!r} is not the event's user_id {user_id!r}"


def check_keys(
    records: Sequence[RawRecord], dec: Decoded, *, topic: str, partition: int, now: float
) -> int:
    """Move the events of ``dec`` whose record key is not their user id to its dead
    letters (in place); returns how many moved. ``records`` are the batch ``dec`` was
    decoded from, in offset order."""
    events, offsets = dec.events, dec.offsets
    if len(records) == len(events):  # no dead letters: records and events align
        keys = list(map(_key, records))
    else:
        by_offset = {r[0]: r[1] for r in records}
        keys = [by_offset[o] for o in offsets]
    # The common case, compared at C speed as two joined strings: user ids hold no NUL (the
    # models' pattern), so equal joins of as many parts mean the parts are equal.
    try:
        if b"\x00".join(keys) == "\x00".join(map(_user, events)).encode():
            return 0
    except TypeError:  # a record without a key
        pass
    users = list(map(str.encode, map(_user, events)))
    bad = [j for j, (k, u) in enumerate(zip(keys, users, strict=True)) if k != u]
    record = {r[0]: r for r in records}
    for j in bad:
        rec = record[offsets[j]]
        dec.dead.append(
            DeadLetter(
                value=rec[2],
                key=rec[1],
                source_topic=topic,
                source_partition=partition,
                source_offset=offsets[j],
                reason=_reason(rec[1], events[j].user_id),
                failed_at=now,
            )
        )
    dec.dead.sort(key=lambda d: d.source_offset)  # the dead-letter topic keeps their order
    drop = set(bad)
    keep = [j for j in range(len(events)) if j not in drop]
    dec.events = [events[j] for j in keep]
    dec.offsets = [offsets[j] for j in keep]
    dec.produced_ms = [dec.produced_ms[j] for j in keep]
    return len(bad)
