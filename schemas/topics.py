"""Topic names and their settings. Full names are ``<prefix>.<name>``."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import EVENT_TYPES


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name, without the prefix
    compacted: bool = False
    # None: use the configured default for event topics.
    partitions: int | None = None
    config: dict[str, str] = field(default_factory=dict)


WATCH = "watch"
RATE = "rate"
RECO_REQUESTS = "reco_requests"
RECO_RESPONSES = "reco_responses"
FEEDBACK = "feedback"
DEAD_LETTER = "dead_letter"
CATALOG = "catalog"

EVENT_TOPICS: tuple[str, ...] = (WATCH, RATE, RECO_REQUESTS, RECO_RESPONSES, FEEDBACK)

TOPICS: tuple[TopicSpec, ...] = (
    *(TopicSpec(t) for t in EVENT_TOPICS),
    # Dead letters keep the original bytes; one partition keeps them in arrival order.
    TopicSpec(DEAD_LETTER, partitions=1),
    # The catalog is state, not a log: the latest record per item is all that matters.
    TopicSpec(
        CATALOG,
        compacted=True,
        partitions=1,
        config={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
    ),
)

TOPIC_OF_EVENT: dict[str, str] = {name: cls.TOPIC for name, cls in EVENT_TYPES.items()}


def full_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"


def topic_for(event_type: str) -> str:
    """Logical topic of an event type (``reco_response`` -> ``reco_responses``)."""
    try:
        return TOPIC_OF_EVENT[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None
