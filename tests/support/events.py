"""Event bytes and a fake Redis for the stream processor's unit tests (no services): the
same documents a producer writes, at a fixed event time."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.codec import encode_event
from schemas.events import RateEvent, WatchEvent
from streams.redis_sink import APPLIED, ApplyResult

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def watch(i: int, user: str = "u1", item: str = "m1", t: float = T0) -> bytes:
    return encode_event(
        WatchEvent(event_id=f"w{i}", user_id=user, item_id=item, ts=datetime.fromtimestamp(t, UTC))
    )


def rate(i: int, user: str, item: str, rating: float, t: float = T0) -> bytes:
    return encode_event(
        RateEvent(
            event_id=f"r{i}",
            user_id=user,
            item_id=item,
            rating=rating,
            ts=datetime.fromtimestamp(t, UTC),
        )
    )


class FakeRedis:
    def __init__(self) -> None:
        self.applied = []

    def apply(self, ranges, payload):
        self.applied.extend(ranges)
        return [ApplyResult(r, APPLIED, r.last) for r in ranges]

    def apply_many(self, calls):
        return [self.apply(ranges, payload) for ranges, payload in calls]

    def watermarks(self, topic, partitions):
        return {}
