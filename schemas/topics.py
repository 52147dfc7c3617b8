"""Topic names and their settings. Full names are ``<prefix>.<name>``.

Every event record is keyed by its ``user_id`` (UTF-8; :attr:`schemas.events.Event.key`), so
a user's events stay in one partition, in order. The stream worker relies on it -- its offset
watermarks and event-id dedupe are per partition -- and dead-letters a record whose key is
not its event's ``user_id`` (or that has no key) with the reason ``key mismatch``. The
dead-letter topic's records follow :mod:`schemas.dead_letter`.
"""

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


# Partitioning is part of the contract: the stream processor keeps each Kafka partition's Redis
# state in one hash slot (schemas.redis_keys), so serving must find the partition of a user
# from the user id alone. Producers key by user id and use Kafka's standard partitioner,
# murmur2 (Java's default, aiokafka's, librdkafka's ``murmur2_random``), so events from JVM
# services and from streamrec land alike.
PARTITIONER = "murmur2_random"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``),
    as a signed 32-bit value."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length & 3
    tail = 4 * n4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's murmur2 partitioner gives ``key`` among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
