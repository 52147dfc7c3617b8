"""Stage 1: read the event snapshots and build weighted user-item interactions.

Only the files needed are read: snapshot keys are listed per event type, parsed with
:class:`schemas.snapshots.SnapshotFile` and filtered by the event-time range in their name
(a legacy ``date=`` file: by its day) before any byte is fetched; row groups and rows are
filtered by time in the Parquet scan. Events are deduped by
``event_id`` (the stream processor already guarantees it; this is belt and braces).

Weights: each (user, item) pair gets ``watch_weight * log2(1 + n_watch_events)`` plus
``rate_weight * rating / 5`` for its latest rating. The log keeps the CMU stream's one event
per watched minute from drowning everything else. The pair's time is its first event: the
moment the user discovered the item, which is what the temporal holdout asks to predict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.sparse import csr_matrix

from core.storage import ObjectStore
from models.base import UserItems
from schemas.manifest import TrainingData
from schemas.snapshots import SnapshotFile, prefix_for
from training.errors import NoSnapshotsError, TrainingError

log = logging.getLogger(__name__)

EVENT_TYPES = ("watch", "rate")
_COLUMNS = {
    "watch": ["event_id", "user_id", "item_id", "ts"],
    "rate": ["event_id", "user_id", "item_id", "ts", "rating"],
}


@dataclass
class TimeRange:
    """Half-open event-time range [since, until); either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise TrainingError(
                f"empty time range: since {self.since} is not before until {self.until}"
            )


def parse_day_or_time(text: str, *, end: bool = False) -> datetime:
    """``YYYY-MM-DD`` (a whole day: its end when ``end``) or an ISO 8601 time (UTC if naive)."""
    try:
        if len(text) == 10:
            d = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return d + timedelta(days=1) if end else d
        t = datetime.fromisoformat(text)
    except ValueError:
        raise TrainingError(f"not a date or ISO time: {text!r} (use YYYY-MM-DD)") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass
class Interactions:
    """One row per (user, item) pair, sorted by user, then time, then item."""

    users: np.ndarray  # int32 codes into user_ids
    items: np.ndarray  # int32 codes into item_ids
    weights: np.ndarray  # float32
    ts: np.ndarray  # float64 epoch seconds of the pair's first event
    ratings: np.ndarray  # float32 latest rating, NaN if never rated
    user_ids: np.ndarray  # object (str)
    item_ids: np.ndarray  # object (str)
    source: TrainingData = field(default_factory=TrainingData)
    # Built once: every family fitted on these rows shares one matrix (memory at 30M events).
    _user_items: UserItems | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> Interactions:
        """Rows where ``mask`` holds, with the same id maps (so models stay comparable)."""
        return Interactions(
            self.users[mask], self.items[mask], self.weights[mask], self.ts[mask],
            self.ratings[mask], self.user_ids, self.item_ids, self.source,
        )  # fmt: skip

    def user_items(self) -> UserItems:
        if self._user_items is not None:
            return self._user_items
        m = csr_matrix(
            (self.weights, (self.users, self.items)),
            shape=(len(self.user_ids), len(self.item_ids)),
            dtype=np.float32,
        )
        m.sum_duplicates()
        self._user_items = UserItems(m, self.user_ids, self.item_ids)
        return self._user_items


def list_snapshots(store: ObjectStore, time_range: TimeRange) -> list[SnapshotFile]:
    files = []
    for event_type in EVENT_TYPES:
        for key in store.list(prefix_for(event_type)):
            snap = SnapshotFile.parse(key)
            if snap is not None and snap.may_hold(time_range.since, time_range.until):
                files.append(snap)
    return sorted(files)


def _read_one(store: ObjectStore, snap: SnapshotFile, time_range: TimeRange) -> pa.Table:
    cols = _COLUMNS[snap.event_type]
    filt = None
    if time_range.since:
        filt = pc.field("ts") >= pa.scalar(time_range.since, pa.timestamp("us", tz="UTC"))
    if time_range.until:
        upper = pc.field("ts") < pa.scalar(time_range.until, pa.timestamp("us", tz="UTC"))
        filt = upper if filt is None else filt & upper
    root = getattr(store, "root", None)
    try:
        if root is not None:  # a local store: let Arrow read the file itself (memory-mapped)
            table = pq.read_table(str(root / snap.key), columns=cols, filters=filt, memory_map=True)
        else:
            table = pq.read_table(pa.BufferReader(store.get(snap.key)), columns=cols, filters=filt)
    except (pa.ArrowInvalid, OSError) as err:
        raise TrainingError(f"snapshot {snap.key} in {store.url} is unreadable: {err}") from err
    if snap.event_type == "watch":
        table = table.append_column("rating", pa.nulls(len(table), pa.float32()))
    return table.cast(_UNIFIED)


_UNIFIED = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("rating", pa.float32()),
    ]
)


def require_files(store: ObjectStore, time_range: TimeRange, files: list[SnapshotFile]) -> None:
    if not files:
        detail = ""
        if time_range.since or time_range.until:
            detail = f"between {time_range.since or '-inf'} and {time_range.until or '+inf'}"
        raise NoSnapshotsError(
            url=store.url, prefix="events/event_type={watch,rate}/", detail=detail
        )


def scan_interaction_events(
    store: ObjectStore,
    time_range: TimeRange | None = None,
    *,
    files: list[SnapshotFile] | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> tuple[pa.Table, list[SnapshotFile]]:
    """What the trainer reads: :func:`training.scan.scan_events` (streamed, ids as
    dictionary codes, no ``event_id`` column) over the snapshots in range."""
    from training.scan import scan_events

    time_range = time_range or TimeRange()
    files = list_snapshots(store, time_range) if files is None else files
    require_files(store, time_range, files)
    events = scan_events(
        store, files, since=time_range.since, until=time_range.until, on_file=on_file
    )
    return events, files


def read_events(
    store: ObjectStore,
    time_range: TimeRange | None = None,
    *,
    files: list[SnapshotFile] | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> tuple[pa.Table, list[SnapshotFile]]:
    """Watch and rate events (deduped by event id) from every snapshot in range (``files``:
    a listing already made with :func:`list_snapshots`)."""
    time_range = time_range or TimeRange()
    files = list_snapshots(store, time_range) if files is None else files
    require_files(store, time_range, files)
    tables = []
    for n, snap in enumerate(files, 1):
        tables.append(_read_one(store, snap, time_range))
        if on_file:
            on_file(n, len(files))
    events = pa.concat_tables(tables).combine_chunks()
    ids = pc.dictionary_encode(events["event_id"]).combine_chunks().indices.to_numpy()
    _, first = np.unique(ids, return_index=True)
    if len(first) < len(events):
        log.warning("dropped %d duplicate events (same event_id)", len(events) - len(first))
        events = events.take(pa.array(np.sort(first)))
    return events, files


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_dictionary(column.type) and column.num_chunks:
        dictionary = column.chunk(0).dictionary
        if all(c.dictionary.equals(dictionary) for c in column.chunks[1:]):
            parts = [c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]
            codes = np.concatenate(parts)
            # Keep only the ids some row uses (the scan's dictionaries may hold more).
            used = np.bincount(codes, minlength=len(dictionary)) > 0
            remap = np.cumsum(used, dtype=np.int64) - 1
            ids = np.asarray(dictionary.filter(pa.array(used)).to_pylist(), dtype=object)
            return remap[codes].astype(np.int32), ids
        column = column.cast(pa.string())
    enc = pc.dictionary_encode(
        column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    )
    return enc.indices.to_numpy().astype(np.int32), np.asarray(
        enc.dictionary.to_pylist(), dtype=object
    )


def build_interactions(
    events: pa.Table,
    files: list[SnapshotFile] | None = None,
    *,
    watch_weight: float = 1.0,
    rate_weight: float = 1.0,
) -> Interactions:
    if len(events) == 0:
        raise TrainingError("the snapshots in range hold no watch or rate events")
    users, user_ids = _codes(events["user_id"])
    items, item_ids = _codes(events["item_id"])
    ts = events["ts"].cast(pa.int64()).to_numpy().astype(np.float64) / 1e6
    rating = events["rating"].to_numpy(zero_copy_only=False).astype(np.float32)  # NaN: watch
    n_items = max(len(item_ids), 1)
    pair = users.astype(np.int64) * n_items + items
    # One integer sort by pair (stable: a pair's events keep their scan order) instead of a
    # lexsort by (pair, time): the pair's first time, watch count and latest rating are
    # reductions that need no time order within the pair (3x less CPU at 10M events).
    order = np.argsort(pair, kind="stable")
    pair_sorted = pair[order]
    del pair
    starts = np.flatnonzero(np.r_[True, pair_sorted[1:] != pair_sorted[:-1]])
    ts_sorted = ts[order]
    first_ts = np.minimum.reduceat(ts_sorted, starts)
    is_watch = np.isnan(rating[order])
    n_watch = np.add.reduceat(is_watch.astype(np.int64), starts)
    # Latest rating of the pair: its rate row latest in time (ties: the later-scanned row).
    latest_ts = np.maximum.reduceat(np.where(is_watch, -np.inf, ts_sorted), starts)
    lengths = np.diff(np.r_[starts, len(order)])
    is_latest = ~is_watch & (ts_sorted == np.repeat(latest_ts, lengths))
    last_rate = np.maximum.reduceat(np.where(is_latest, np.arange(len(order)), -1), starts)
    has_rate = last_rate >= 0
    latest = np.full(len(starts), np.nan, np.float32)
    latest[has_rate] = rating[order[last_rate[has_rate]]]
    weights = watch_weight * np.log2(1 + n_watch) + rate_weight * np.nan_to_num(latest) / 5
    pairs = pair_sorted[starts]
    u, it, t = (pairs // n_items).astype(np.int32), (pairs % n_items).astype(np.int32), first_ts
    del pair_sorted, ts_sorted
    # By user, then time, then item: pairs are already by (user, item), so a stable sort by
    # time and then by user (a time rank packed under the user code) keeps items in order.
    t_rank = np.empty(len(t), np.int64)
    t_rank[np.argsort(t, kind="stable")] = np.arange(len(t))
    final = np.argsort(u.astype(np.int64) * len(t) + t_rank)
    src = TrainingData(
        snapshot_files=[f.key for f in files or []],
        event_time_min=datetime.fromtimestamp(float(ts.min()), UTC),
        event_time_max=datetime.fromtimestamp(float(ts.max()), UTC),
        n_events=len(events),
        n_interactions=len(starts),
        n_users=len(user_ids),
        n_items=len(item_ids),
    )
    return Interactions(
        u[final], it[final], weights[final].astype(np.float32), t[final], latest[final],
        user_ids, item_ids, src,
    )  # fmt: skip
