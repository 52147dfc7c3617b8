"""The trainer's streaming read of the snapshots: only the columns training needs, only the
files whose event-time range meets the window (:func:`training.data.list_snapshots`), the time
filter pushed into the Parquet scan (row groups skipped by their ``ts`` statistics), user
and item ids read as dictionary codes (so no id string is materialised per row), and each
batch's ``event_id`` reduced to a 64-bit hash right away: duplicates are dropped by hash, and
the id strings (the widest column) never sit in memory all at once. Local stores are scanned
as one ``pyarrow.dataset`` per event type; other stores are fetched a file at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.storage import ObjectStore
from schemas.snapshots import SnapshotFile
from training.errors import TrainingError

log = logging.getLogger(__name__)

DICTIONARY = ["user_id", "item_id"]
_COLUMNS = {
    "watch": ["event_id", "user_id", "item_id", "ts"],
    "rate": ["event_id", "user_id", "item_id", "ts", "rating"],
}
SCANNED = pa.schema(
    [
        pa.field("user_id", pa.dictionary(pa.int32(), pa.string())),
        pa.field("item_id", pa.dictionary(pa.int32(), pa.string())),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("rating", pa.float32()),
    ]
)
# Odd 64-bit multipliers, one per byte position (mod 256): a random linear hash of the bytes.
_MULT = np.random.default_rng(0x5EED).integers(1, 2**63, 256, dtype=np.uint64) * 2 + 1


def hash_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string, vectorised over the Arrow buffers (no Python strings).
    Two distinct ids of 30M collide with probability ~1e-5: a wrongly dropped event."""
    if isinstance(ids, pa.ChunkedArray):
        parts = [hash_ids(c) for c in ids.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    arr = ids.cast(pa.large_string()) if ids.type != pa.large_string() else ids
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, np.int64, n + 1, arr.offset * 8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, np.uint8, hi - lo, lo).astype(np.uint64) if hi > lo else None
    lengths = np.diff(offsets)
    h = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if data is not None:
        starts = offsets[:-1] - lo
        pos = np.arange(hi - lo) - np.repeat(starts, lengths)
        terms = data * _MULT[pos % 256]
        nonempty = lengths > 0
        h[nonempty] += np.add.reduceat(terms, starts[nonempty])
    # splitmix64 finaliser: spreads the linear sum over all bits.
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _filter(since, until) -> pc.Expression | None:
    filt = None
    if since:
        filt = pc.field("ts") >= pa.scalar(since, pa.timestamp("us", tz="UTC"))
    if until:
        upper = pc.field("ts") < pa.scalar(until, pa.timestamp("us", tz="UTC"))
        filt = upper if filt is None else filt & upper
    return filt


def _batches(
    store: ObjectStore, files: list[SnapshotFile], since, until, on_file: Callable[[int], None]
) -> Iterator[tuple[str, pa.Table]]:
    """(event type, table) per scanned batch; ``on_file(n)`` as files complete."""
    filt = _filter(since, until)
    root = getattr(store, "root", None)
    done = 0
    for event_type in ("watch", "rate"):
        mine = [f for f in files if f.event_type == event_type]
        if not mine:
            continue
        cols = _COLUMNS[event_type]
        try:
            if root is not None:
                fmt = ds.ParquetFileFormat(
                    read_options=ds.ParquetReadOptions(dictionary_columns=DICTIONARY)
                )
                dataset = ds.dataset([str(root / f.key) for f in mine], format=fmt)
                seen: set[str] = set()
                scanner = dataset.scanner(columns=cols, filter=filt, batch_size=1 << 18)
                for tagged in scanner.scan_batches():
                    path = tagged.fragment.path
                    if path not in seen:
                        seen.add(path)
                        on_file(done + len(seen))
                    yield event_type, pa.Table.from_batches([tagged.record_batch])
                done += len(mine)
                on_file(done)
            else:
                for f in mine:
                    table = pq.read_table(
                        pa.BufferReader(store.get(f.key)), columns=cols, filters=filt,
                        read_dictionary=DICTIONARY,
                    )  # fmt: skip
                    done += 1
                    on_file(done)
                    yield event_type, table
        except (pa.ArrowInvalid, OSError) as err:
            msg = f"a {event_type} snapshot in {store.url} is unreadable: {err}"
            raise TrainingError(msg) from err


def scan_events(
    store: ObjectStore,
    files: list[SnapshotFile],
    *,
    since=None,
    until=None,
    on_file: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """Watch and rate events of ``files`` in [since, until) as a table of :data:`SCANNED`
    (one dictionary per id column, shared by all chunks), deduped by ``event_id``."""
    total = len(files)
    tables, hashes = [], []
    for event_type, table in _batches(
        store, files, since, until, lambda n: on_file(n, total) if on_file else None
    ):
        if len(table) == 0:
            continue
        hashes.append(hash_ids(table["event_id"]))
        table = table.drop_columns(["event_id"])
        if event_type == "watch":
            table = table.append_column("rating", pa.nulls(len(table), pa.float32()))
        tables.append(table.select(SCANNED.names).cast(SCANNED))
    if not tables:
        return SCANNED.empty_table()
    events = pa.concat_tables(tables).unify_dictionaries()
    h = np.concatenate(hashes)
    del tables, hashes
    _, first = np.unique(h, return_index=True)
    if len(first) < len(events):
        log.warning("dropped %d duplicate events (same event_id)", len(events) - len(first))
        events = events.take(pa.array(np.sort(first)))
    return events
