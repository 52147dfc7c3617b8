"""Dead letters: the original message bytes as the value and why and where it came from in
headers.

The value is the original unchanged -- unless it would not fit in a Kafka record: a dead
letter must always be deliverable, or one oversized bad record would stall its sender
forever. :meth:`DeadLetter.fit` keeps the first bytes that fit in ``max_bytes`` (the key the
first :data:`MAX_KEY_BYTES`), says so in ``sr-truncated`` and keeps the original's size and
sha256 (``sr-value-size``, ``sr-value-sha256``; ``sr-key-size``, ``sr-key-sha256`` when the
key was cut), so the full record can still be identified in its source. A null value has no
size header, an empty one has size 0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

HEADER_SOURCE_TOPIC = "sr-source-topic"
HEADER_SOURCE_PARTITION = "sr-source-partition"
HEADER_SOURCE_OFFSET = "sr-source-offset"
HEADER_REASON = "sr-reason"
HEADER_FAILED_AT = "sr-failed-at"
HEADER_TRUNCATED = "sr-truncated"  # what was cut to fit: "value", "key" or "key,value"
HEADER_VALUE_SIZE = "sr-value-size"
HEADER_VALUE_SHA256 = "sr-value-sha256"
HEADER_KEY_SIZE = "sr-key-size"
HEADER_KEY_SHA256 = "sr-key-sha256"
MAX_REASON_BYTES = 2048
MAX_KEY_BYTES = 1024  # producers key by user id; a longer key is junk, kept as a prefix
# A quarter of Kafka's default record limit (topic max.message.bytes 1048588, librdkafka
# message.max.bytes 1000000) and four times the largest event the decoder accepts.
DEFAULT_MAX_BYTES = 256 * 1024
# Room for the key, the headers (the reason is capped at MAX_REASON_BYTES) and the record's
# own framing: the value gets max_bytes minus the key minus this.
HEADROOM_BYTES = 4096
MIN_MAX_BYTES = 2 * HEADROOM_BYTES


@dataclass(frozen=True)
class Truncated:
    """``data`` cut to a limit, with what identifies the original."""

    data: bytes | None
    size: int  # of the original; -1: null
    sha256: str  # of the original; "" when null
    truncated: bool


def truncate_payload(data: bytes | None, limit: int) -> Truncated:
    """The first ``limit`` bytes of ``data`` and the original's size and sha256 (pure)."""
    if data is None:
        return Truncated(None, -1, "", False)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= limit:
        return Truncated(data, len(data), digest, False)
    return Truncated(data[: max(0, limit)], len(data), digest, True)


@dataclass(frozen=True)
class DeadLetter:
    value: bytes | None
    key: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    failed_at: float
    # Set by fit() (and read back by from_message); empty: the letter was never fitted.
    truncated: tuple[str, ...] = ()
    value_size: int | None = None
    value_sha256: str | None = None
    key_size: int | None = None
    key_sha256: str | None = None

    def fit(self, max_bytes: int = DEFAULT_MAX_BYTES) -> DeadLetter:
        """This letter with its value (and key) cut so the record stays under ``max_bytes``
        (at least :data:`MIN_MAX_BYTES`), recording the original's size and sha256."""
        max_bytes = max(max_bytes, MIN_MAX_BYTES)
        key = truncate_payload(self.key, MAX_KEY_BYTES)
        room = max_bytes - HEADROOM_BYTES - len(key.data or b"")
        value = truncate_payload(self.value, room)
        cut = tuple(n for n, t in (("key", key), ("value", value)) if t.truncated)
        return replace(
            self,
            value=value.data,
            key=key.data,
            truncated=cut,
            value_size=value.size if value.data is not None else None,
            value_sha256=value.sha256 or None,
            key_size=key.size if key.truncated else None,
            key_sha256=key.sha256 if key.truncated else None,
        )

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Kafka record headers (the value type confluent-kafka's produce() takes)."""
        out: list[tuple[str, str | bytes | None]] = [
            (HEADER_SOURCE_TOPIC, self.source_topic.encode()),
            (HEADER_SOURCE_PARTITION, str(self.source_partition).encode()),
            (HEADER_SOURCE_OFFSET, str(self.source_offset).encode()),
            (HEADER_REASON, self.reason.encode()[:MAX_REASON_BYTES]),
            (HEADER_FAILED_AT, repr(self.failed_at).encode()),
        ]
        if self.truncated:
            out.append((HEADER_TRUNCATED, ",".join(self.truncated).encode()))
        for name, v in (
            (HEADER_VALUE_SIZE, self.value_size),
            (HEADER_VALUE_SHA256, self.value_sha256),
            (HEADER_KEY_SIZE, self.key_size),
            (HEADER_KEY_SHA256, self.key_sha256),
        ):
            if v is not None:
                out.append((name, str(v).encode()))
        return out

    @classmethod
    def from_message(
        cls, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> DeadLetter:
        h = {k: v.decode(errors="replace") for k, v in (headers or [])}

        def size(name: str) -> int | None:
            return int(h[name]) if name in h else None

        return cls(
            value=value,
            key=key,
            source_topic=h.get(HEADER_SOURCE_TOPIC, ""),
            source_partition=int(h.get(HEADER_SOURCE_PARTITION, "-1")),
            source_offset=int(h.get(HEADER_SOURCE_OFFSET, "-1")),
            reason=h.get(HEADER_REASON, ""),
            failed_at=float(h.get(HEADER_FAILED_AT, "0")),
            truncated=tuple(t for t in h.get(HEADER_TRUNCATED, "").split(",") if t),
            value_size=size(HEADER_VALUE_SIZE),
            value_sha256=h.get(HEADER_VALUE_SHA256),
            key_size=size(HEADER_KEY_SIZE),
            key_sha256=h.get(HEADER_KEY_SHA256),
        )
