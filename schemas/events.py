"""Typed events: the wire contract between producers, the stream processor and serving.

On the wire an event is one JSON object carrying ``event_type`` and ``schema_version``;
Kafka messages are keyed by ``user_id`` so each user's events stay ordered in one partition.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

# Ids are opaque strings. Commas and whitespace are excluded because the CMU course contract
# returns recommendations as one comma-separated line; control characters never belong in ids.
_ID_PATTERN = r"^[^\s,\x00-\x1f\x7f]+$"
MAX_ID_LENGTH = 256

UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN)
]
ItemId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN)
]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_ID_PATTERN)]


# Event times outside these bounds are rejected: nothing real happened before the epoch or
# after 2100, and one far-future event would move the worker's notion of "now" (trending,
# hourly buckets) there for good. Both ends convert to epoch seconds and to every date type
# downstream (Parquet us timestamps, numpy datetime64) without overflow.
MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TS = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_string(value: object) -> object:
    # Strict on the wire: pydantic alone would read a number, a numeric string or a bool as
    # unix time. Python callers may still pass a datetime.
    if isinstance(value, datetime) or (isinstance(value, str) and _DATE_PREFIX.match(value)):
        return value
    raise ValueError(
        "Input should be a valid datetime string, ISO 8601 "
        f"(YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM]), not {type(value).__name__} {value!r:.40}"
    )


def _utc(value: datetime) -> datetime:
    # Naive timestamps are taken as UTC: the CMU logs and MovieLens carry no zone.
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None
    if not MIN_TS <= value < MAX_TS:
        raise ValueError(
            f"{value.isoformat()} is out of range: must be from {MIN_TS:%Y-%m-%d} "
            f"up to {MAX_TS:%Y-%m-%d} UTC"
        )
    return value


Timestamp = Annotated[datetime, BeforeValidator(_iso_string), AfterValidator(_utc)]


class Event(BaseModel):
    """Fields every event carries. Subclasses set ``event_type`` and ``TOPIC``."""

    if TYPE_CHECKING:  # every subclass's Literal field (the wire discriminator), for checkers
        event_type: str

    model_config = ConfigDict(extra="forbid", frozen=True)

    SCHEMA_VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]

    # Numbers are strict (no "5", true or 5.0 for an integer) in every event type: the JSON
    # Schema always said so, and the fast decoder reads only real JSON numbers.
    schema_version: int = Field(
        1, ge=1, strict=True, description="Version of this event type's schema."
    )
    event_id: EventId = Field(description="Unique id; re-sending the same id is idempotent.")
    user_id: UserId
    ts: Timestamp = Field(
        description="Event time, an ISO 8601 string (UTC when no zone is given), from "
        "1970-01-01 up to 2100-01-01 UTC."
    )

    @property
    def key(self) -> bytes:
        return self.user_id.encode()

    @property
    def epoch(self) -> float:
        return self.ts.timestamp()


class WatchEvent(Event):
    """A user watched (part of) an item. ``minute`` is the CMU stream's minute index."""

    TOPIC: ClassVar[str] = "watch"
    event_type: Literal["watch"] = "watch"
    item_id: ItemId
    minute: int | None = Field(
        None, ge=0, le=100_000, strict=True, description="Minute index watched."
    )
    seconds: float | None = Field(
        None, ge=0, le=86_400, strict=True, description="Seconds watched."
    )


class RateEvent(Event):
    TOPIC: ClassVar[str] = "rate"
    event_type: Literal["rate"] = "rate"
    item_id: ItemId
    rating: float = Field(
        ge=0, le=5, strict=True, description="Rating on a 0-5 scale (MovieLens: 1-5)."
    )


class RecoRequestEvent(Event):
    TOPIC: ClassVar[str] = "reco_requests"
    event_type: Literal["reco_request"] = "reco_request"
    request_id: EventId
    k: int = Field(ge=1, le=1000, strict=True)


Variant = Literal["production", "canary", "fallback", "external"]


class RecoResponseEvent(Event):
    """What was served. ``variant="external"`` marks responses logged by other systems
    (e.g. ingested CMU course logs)."""

    TOPIC: ClassVar[str] = "reco_responses"
    event_type: Literal["reco_response"] = "reco_response"
    request_id: EventId
    items: list[ItemId] = Field(max_length=1000)
    model_name: str = Field(min_length=1, max_length=128)
    model_version: str = Field(min_length=1, max_length=64)
    variant: Variant
    fallback_reason: str | None = Field(None, max_length=256)
    latency_ms: float = Field(ge=0, strict=True, allow_inf_nan=False)
    status: int = Field(200, ge=0, le=599, strict=True)


class FeedbackEvent(Event):
    TOPIC: ClassVar[str] = "feedback"
    event_type: Literal["feedback"] = "feedback"
    item_id: ItemId
    kind: Literal["click", "watch", "like", "dislike", "dismiss"]
    request_id: EventId | None = None
    value: float | None = Field(None, strict=True, allow_inf_nan=False)


EVENT_TYPES: dict[str, type[Event]] = {
    "watch": WatchEvent,
    "rate": RateEvent,
    "reco_request": RecoRequestEvent,
    "reco_response": RecoResponseEvent,
    "feedback": FeedbackEvent,
}

AnyEvent = Annotated[
    WatchEvent | RateEvent | RecoRequestEvent | RecoResponseEvent | FeedbackEvent,
    Field(discriminator="event_type"),
]

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.:+\-]")


def make_event_id(*parts: object) -> str:
    """A deterministic event id from the parts that identify an event, so that replaying the
    same source twice produces the same ids (and so no duplicates downstream)."""
    raw = "|".join(str(p) for p in parts)
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()
