"""Parquet snapshot layout: the contract between the stream processor (writer), the trainer
and anything else that reads the lake (DuckDB, Spark, Athena). Hive-partitioned by event type
and ARRIVAL date (the UTC day the worker wrote the file), with the event-time range in the
file name::

    events/event_type=<type>/arrival_date=<YYYY-MM-DD>/
        part-p<partition>-o<first>-<last>-t<min>-<max>.parquet

``first``/``last`` are the Kafka offsets (inclusive, zero-padded to 20 digits so names sort)
of the rows; ``min``/``max`` bound their event times (``ts`` column, UTC, to the second:
``YYYYMMDDTHHMMSS``, min rounded down, max up), so a reader prunes files by event time from
a listing alone, and Parquet's row-group statistics on ``ts`` prune within files. A
time-ordered replay of history spans months of event time per micro-batch: partitioning by
event date made a file per event type, day and partition (~1,500 files of ~100 rows for
MovieLens-100K); by arrival date it is one file per event type and partition per flush.

After a crash the same offsets may be rewritten (with other boundaries, on another day): on
assignment a writer removes its partition's files whose rows lie at or after the committed
offset, so the union of snapshots holds each event exactly once.

Older stores hold the previous layout, partitioned by EVENT date and without the time range
(``events/event_type=<type>/date=<YYYY-MM-DD>/part-p<P>-o<first>-<last>.parquet``).
:meth:`SnapshotFile.parse` reads both (a ``date=`` file's event times lie within its day), so a
store written before and after the change is read whole; the two never overlap in offsets.
Columns are typed (see :func:`arrow_schema`); ``kafka_partition`` and ``kafka_offset`` say
where each row came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

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
    r"^events/event_type=(?P<type>[a-z_]+)/arrival_date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"part-p(?P<partition>\d+)-o(?P<first>\d{20})-(?P<last>\d{20})"
    r"-t(?P<min>\d{8}T\d{6})-(?P<max>\d{8}T\d{6})\.parquet$"
)
# The layout before arrival dates (event-date partitions, no time range in the name).
_LEGACY = re.compile(
    r"^events/event_type=(?P<type>[a-z_]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"part-p(?P<partition>\d+)-o(?P<first>\d{20})-(?P<last>\d{20})\.parquet$"
)
_STAMP = "%Y%m%dT%H%M%S"
_Day = date  # the class below has a field named ``date``


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_STAMP)


def _unstamp(text: str) -> datetime:
    return datetime.strptime(text, _STAMP).replace(tzinfo=UTC)


@dataclass(frozen=True, order=True)
class SnapshotFile:
    """One snapshot file. ``date``: its directory's day (arrival; event day for ``legacy``);
    ``ts_min``/``ts_max``: bounds of its rows' event times, to the second (min rounded down,
    max up)."""

    event_type: str
    date: date
    partition: int
    first_offset: int
    last_offset: int
    ts_min: datetime
    ts_max: datetime
    legacy: bool = False

    @classmethod
    def of_rows(
        cls,
        event_type: str,
        arrival: _Day,
        partition: int,
        offsets: tuple[int, int],
        ts_us: tuple[int, int],
    ) -> SnapshotFile:
        """A new-layout file of rows with offsets ``first, last`` and event times
        ``min, max`` (epoch microseconds)."""
        lo = datetime.fromtimestamp(ts_us[0] // 1_000_000, UTC)
        hi = datetime.fromtimestamp(-(-ts_us[1] // 1_000_000), UTC)
        return cls(event_type, arrival, partition, offsets[0], offsets[1], lo, hi)

    @property
    def key(self) -> str:
        offsets = f"part-p{self.partition}-o{self.first_offset:020d}-{self.last_offset:020d}"
        if self.legacy:
            return f"{prefix_for(self.event_type)}date={self.date.isoformat()}/{offsets}.parquet"
        return (
            f"{prefix_for(self.event_type)}arrival_date={self.date.isoformat()}/{offsets}"
            f"-t{_stamp(self.ts_min)}-{_stamp(self.ts_max)}.parquet"
        )

    @classmethod
    def parse(cls, key: str) -> SnapshotFile | None:
        """None for keys that are not snapshot files (so listings can be filtered); files of
        the legacy layout parse too (``legacy``; event times bounded by their day)."""
        m = _NAME.match(key)
        legacy = m is None
        if m is None:
            m = _LEGACY.match(key)
            if m is None:
                return None
        day = date.fromisoformat(m["date"])
        if legacy:
            lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
            hi = lo + timedelta(days=1)
        else:
            lo, hi = _unstamp(m["min"]), _unstamp(m["max"])
        return cls(
            event_type=m["type"],
            date=day,
            partition=int(m["partition"]),
            first_offset=int(m["first"]),
            last_offset=int(m["last"]),
            ts_min=lo,
            ts_max=hi,
            legacy=legacy,
        )

    def overlaps(self, other: SnapshotFile) -> bool:
        return (
            self.event_type == other.event_type
            and self.partition == other.partition
            and self.first_offset <= other.last_offset
            and other.first_offset <= self.last_offset
        )

    def may_hold(self, since: datetime | None, until: datetime | None) -> bool:
        """Whether some row may have an event time in [since, until) (either end open)."""
        if since is not None and self.ts_max < since:
            return False
        return until is None or self.ts_min < until


def prefix_for(event_type: str) -> str:
    """The prefix under which every snapshot file of ``event_type`` lies (both layouts)."""
    return f"{ROOT}/event_type={event_type}/"
