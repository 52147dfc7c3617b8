"""Contracts between streamrec's components: events, topics, the Redis key layout, snapshot
layout and the model registry documents. Imports nothing else of streamrec's."""

from schemas.catalog import ItemRecord
from schemas.codec import decode_event, encode_event
from schemas.errors import EventValidationError, StreamrecError
from schemas.events import (
    EVENT_TYPES,
    Event,
    FeedbackEvent,
    RateEvent,
    RecoRequestEvent,
    RecoResponseEvent,
    WatchEvent,
)

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventValidationError",
    "FeedbackEvent",
    "ItemRecord",
    "RateEvent",
    "RecoRequestEvent",
    "RecoResponseEvent",
    "StreamrecError",
    "WatchEvent",
    "decode_event",
    "encode_event",
]
