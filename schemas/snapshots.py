"""Parquet snapshot layout: the contract between the stream processor (writer) and the
trainer (reader). Hive-partitioned by event type and event-time date::

    events/event_type=<type>/date=<YYYY-MM-DD>/part-p<partition>-o<first>-<last>.parquet

``first``/``last`` are the Kafka offsets (inclusive, zero-padded to 20 digits so names sort)
of the micro-batch the file came from. After a crash the same batch may be rewritten: a
writer replaces a file of the same name and removes uncommitted files of its partition whose
offset range overlaps, so the union of snapshots holds each event exactly once.
Columns are typed (see :func:`arrow_schema`); ``kafka_partition`` and ``kafka_offset`` say
where each row came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import pyarrow as pa

ROOT = "events"

_TS = pa.timestamp("us", tz="UTC")
_COMMON = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("ts", _TS, nullable=False),
    pa.field("schema_version", pa.int16(), nullable=False),
]
_KAFKA = [
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
]
_FIELDS: dict[str, list[pa.Field]] = {
    "watch": [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("minute", pa.int32()),
        pa.field("seconds", pa.float64()),
    ],
    "rate": [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
    ],
    "reco_request": [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("k", pa.int32(), nullable=False),
    ],
    "reco_response": [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("items", pa.list_(pa.string()), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("fallback_reason", pa.string()),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("status", pa.int16(), nullable=False),
    ],
    "feedback": [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("value", pa.float64()),
    ],
}


def arrow_schema(event_type: str) -> pa.Schema:
    """The typed Arrow schema of one event type's snapshot files."""
    return pa.schema([*_COMMON, *_FIELDS[event_type], *_KAFKA])


_NAME = re.compile(
    r"^events/event_type=(?P<type>[a-z_]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"part-p(?P<partition>\d+)-o(?P<first>\d{20})-(?P<last>\d{20})\.parquet$"
)


@dataclass(frozen=True, order=True)
class SnapshotFile:
    event_type: str
    date: date
    partition: int
    first_offset: int
    last_offset: int

    @property
    def key(self) -> str:
        return (
            f"{ROOT}/event_type={self.event_type}/date={self.date.isoformat()}/"
            f"part-p{self.partition}-o{self.first_offset:020d}-{self.last_offset:020d}.parquet"
        )

    @classmethod
    def parse(cls, key: str) -> SnapshotFile | None:
        """None for keys that are not snapshot files (so listings can be filtered)."""
        m = _NAME.match(key)
        if not m:
            return None
        return cls(
            event_type=m["type"],
            date=date.fromisoformat(m["date"]),
            partition=int(m["partition"]),
            first_offset=int(m["first"]),
            last_offset=int(m["last"]),
        )

    def overlaps(self, other: SnapshotFile) -> bool:
        return (
            self.event_type == other.event_type
            and self.partition == other.partition
            and self.first_offset <= other.last_offset
            and other.first_offset <= self.last_offset
        )


def prefix_for(event_type: str, day: date | None = None) -> str:
    base = f"{ROOT}/event_type={event_type}/"
    return base + (f"date={day.isoformat()}/" if day else "")
