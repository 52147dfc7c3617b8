"""Parquet snapshots: events -> typed Arrow tables -> Parquet bytes, and the writer that puts
them in the object store under the layout of :mod:`schemas.snapshots`.

Exactly-once in the union of snapshots rests on two rules:

- a file is named by its event type, arrival date, Kafka partition and first/last row offset
  (and its rows' event-time range), and ``put`` replaces a file of the same name whole;
- on partition assignment the writer removes the partition's files (of any date, and of
  the legacy layout too) whose rows lie at or after the committed offset: they were written
  but never committed (the worker died between the put and the commit), and their events are
  about to be read again.

On assignment it also removes the partition's temporary files (a local store's
``.part-p<P>-...tmp``, left by a writer killed mid-write) that were last written before this
writer started or more than :data:`STALE_TEMP_S` ago. A partition has one owner, and a
previous owner that handed it over cleanly finished its writes first; other workers'
partitions are never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from operator import attrgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.storage import ObjectStore
from schemas.events import Event
from schemas.snapshots import SnapshotFile, arrow_schema, prefix_for
from streams.fast_decode import EventRecord

log = logging.getLogger(__name__)

_SPECIAL = {"ts", "kafka_partition", "kafka_offset"}
# Older than this, a temporary file is no live write's (one file takes well under a second).
STALE_TEMP_S = 60.0


def arrival_day(now: float | None = None) -> date:
    """The UTC day of ``now`` (default: the clock): the ``arrival_date`` of files written now."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).date()


def to_table(
    event_type: str, events: Sequence[Event | EventRecord], offsets: Sequence[int], partition: int
) -> pa.Table:
    """A typed Arrow table (schema :func:`schemas.snapshots.arrow_schema`) of events."""
    schema = arrow_schema(event_type)
    n = len(events)
    records = n > 0 and set(map(type, events)) == {EventRecord}
    if records:  # the batch decoder's records: every column in one pass (zip transposes)
        fields: Sequence[Sequence] = list(zip(*events, strict=True))
        column = {f: fields[j] for j, f in enumerate(EventRecord._fields)}.__getitem__
    else:  # attrgetter over map: no Python frame per event
        column = lambda name: list(map(attrgetter(name), events))  # noqa: E731
    columns = []
    for f in schema:
        if f.name == "ts":
            # int(epoch * 1e6) of each event, vectorised (the same float product, and the
            # cast truncates as int() does: event times are after 1970); view: the same
            # int64 microseconds, without a compute-kernel cast per file
            epochs = np.fromiter(column("epoch"), dtype=np.float64, count=n)
            micros = (epochs * 1_000_000).astype(np.int64)
            columns.append(pa.array(micros, type=pa.int64()).view(f.type))
        elif f.name == "kafka_partition":
            columns.append(pa.array(np.full(n, partition, dtype=np.int32), type=f.type))
        elif f.name == "kafka_offset":
            columns.append(pa.array(offsets, type=f.type))
        else:
            columns.append(pa.array(column(f.name), type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


# Dictionary encoding only where values repeat: on the unique columns (event id, time,
# offset) it cost time and bytes (MovieLens replay, ~115 rows a file: 527 -> 376 us and
# 4.9 -> 4.4 kB a file; 20k rows: 6.5 -> 4.0 ms, 365 -> 261 kB).
_DICTIONARY_COLUMNS = ("user_id", "item_id")


# Row groups of a big file (a catch-up with a large STREAMREC_STREAM_FLUSH_EVENTS): each has
# min/max statistics on ``ts``, so a time filter skips row groups as well as files.
ROW_GROUP_ROWS = 131_072


def to_parquet(table: pa.Table, compression: str = "zstd") -> bytes:
    sink = pa.BufferOutputStream()
    names = table.column_names
    dictionary = [c for c in _DICTIONARY_COLUMNS if c in names]
    pq.write_table(
        table,
        sink,
        compression=compression,
        use_dictionary=dictionary,
        row_group_size=ROW_GROUP_ROWS,
    )
    return sink.getvalue().to_pybytes()


def snapshot_file(event_type: str, arrival: date, partition: int, table: pa.Table) -> SnapshotFile:
    offsets = table.column("kafka_offset")
    ts = pc.min_max(table.column("ts").cast(pa.int64()))
    return SnapshotFile.of_rows(
        event_type,
        arrival,
        partition,
        (offsets[0].as_py(), offsets[-1].as_py()),
        (ts["min"].as_py(), ts["max"].as_py()),
    )


class SnapshotWriter:
    """Puts snapshot files (blocking I/O: call from a thread in async code)."""

    def __init__(self, store: ObjectStore, compression: str = "zstd") -> None:
        if compression not in ("zstd", "snappy"):
            raise ValueError(f"unsupported parquet compression {compression!r}")
        self.store = store
        self.compression = compression
        self.started_at = time.time()

    def write(
        self,
        event_type: str,
        arrival: date,
        partition: int,
        tables: Sequence[pa.Table],
        *,
        deferred: bool = False,
    ) -> str:
        """Put one file and return its key; ``deferred``: durable only once :meth:`sync`
        of the key returns (a flush job syncs its files at once, before its commit)."""
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        meta = snapshot_file(event_type, arrival, partition, table)
        put = self.store.put_deferred if deferred else self.store.put
        put(meta.key, to_parquet(table, self.compression))
        return meta.key

    def sync(self, keys: Sequence[str]) -> None:
        self.store.sync(keys)

    def uncommitted(self, event_type: str, partition: int, committed: int) -> list[str]:
        """Files of ``partition`` holding rows at or after offset ``committed`` (the next
        offset to consume): written after the last commit."""
        out = []
        for key in self.store.list(prefix_for(event_type)):
            meta = SnapshotFile.parse(key)
            if meta and meta.partition == partition and meta.last_offset >= committed:
                out.append(key)
        return out

    def remove_uncommitted(self, event_type: str, partition: int, committed: int) -> list[str]:
        """Remove the partition's uncommitted files (returned) and its stale temp files."""
        stale = self.store.remove_stale_temp(
            prefix_for(event_type),
            f"part-p{partition}-",
            max(self.started_at, time.time() - STALE_TEMP_S),
        )
        if stale:
            log.info(
                "removed %d temp file(s) of %s[%d] left by a killed writer",
                len(stale),
                event_type,
                partition,
            )
        keys = self.uncommitted(event_type, partition, committed)
        for key in keys:
            self.store.delete(key)
        if keys:
            log.info(
                "removed %d uncommitted snapshot file(s) of %s[%d] at/after offset %d",
                len(keys),
                event_type,
                partition,
                committed,
            )
        return keys


def read_snapshots(store: ObjectStore, event_type: str) -> pa.Table | None:
    """All snapshot rows of one event type (tests, demo); None when there are none."""
    tables = [
        pq.read_table(pa.BufferReader(store.get(key)))
        for key in store.list(prefix_for(event_type))
        if SnapshotFile.parse(key)
    ]
    return pa.concat_tables(tables) if tables else None
