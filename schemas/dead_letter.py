"""Dead letters: the original message bytes as the value (unchanged, so nothing is lost) and
why and where it came from in headers."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SOURCE_TOPIC = "sr-source-topic"
HEADER_SOURCE_PARTITION = "sr-source-partition"
HEADER_SOURCE_OFFSET = "sr-source-offset"
HEADER_REASON = "sr-reason"
HEADER_FAILED_AT = "sr-failed-at"
MAX_REASON_BYTES = 2048


@dataclass(frozen=True)
class DeadLetter:
    value: bytes | None
    key: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    failed_at: float

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_SOURCE_TOPIC, self.source_topic.encode()),
            (HEADER_SOURCE_PARTITION, str(self.source_partition).encode()),
            (HEADER_SOURCE_OFFSET, str(self.source_offset).encode()),
            (HEADER_REASON, self.reason.encode()[:MAX_REASON_BYTES]),
            (HEADER_FAILED_AT, repr(self.failed_at).encode()),
        ]

    @classmethod
    def from_message(
        cls, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> DeadLetter:
        h = {k: v.decode(errors="replace") for k, v in (headers or [])}
        return cls(
            value=value,
            key=key,
            source_topic=h.get(HEADER_SOURCE_TOPIC, ""),
            source_partition=int(h.get(HEADER_SOURCE_PARTITION, "-1")),
            source_offset=int(h.get(HEADER_SOURCE_OFFSET, "-1")),
            reason=h.get(HEADER_REASON, ""),
            failed_at=float(h.get(HEADER_FAILED_AT, "0")),
        )
