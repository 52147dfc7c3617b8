"""Reading the stream processor's Redis state in tests: the layout keeps each Kafka
partition's state in its own hash slot (schemas.redis_keys), so a user's keys are in one
partition's slot and item and popularity counters are summed over every partition's copy.
The user lookups search every slot, so tests that feed the processor synthetic partition
numbers read what it wrote as well."""

from __future__ import annotations

from typing import Any

from schemas.redis_keys import RedisKeys


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def user_hash(r: Any, keys: RedisKeys, user: str, kind: str = "stats") -> dict[str, str]:
    """The user's ``stats``/``genres``/``ratings`` hash, from whichever slot holds it."""
    for slot in keys.all_slots():
        got = r.hgetall(getattr(slot, f"user_{kind}")(user))
        if got:
            return {_text(k): _text(v) for k, v in got.items()}
    return {}


def user_key(r: Any, keys: RedisKeys, user: str, kind: str = "stats") -> str:
    """The name of the user's key in the slot that holds it (the routed one if none does)."""
    for slot in keys.all_slots():
        name = getattr(slot, f"user_{kind}")(user)
        if r.exists(name):
            return name
    return getattr(keys.user_slot(user), f"user_{kind}")(user)


def item_stats(r: Any, keys: RedisKeys, item: str) -> dict[str, float]:
    """An item's counters summed over every partition (``last_seen``: the newest)."""
    out: dict[str, float] = {}
    for slot in keys.all_slots():
        for k, v in r.hgetall(slot.item_stats(item)).items():
            k, x = _text(k), float(_text(v))
            out[k] = max(out.get(k, x), x) if k == "last_seen" else out.get(k, 0.0) + x
    return out


def zsum(r: Any, names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        for member, score in r.zrange(name, 0, -1, withscores=True):
            out[_text(member)] = out.get(_text(member), 0.0) + score
    return out


def pop_all(r: Any, keys: RedisKeys) -> dict[str, float]:
    """All-time popularity, summed over the partitions."""
    return zsum(r, [slot.pop_all for slot in keys.all_slots()])
