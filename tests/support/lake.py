"""Checks of a snapshot store the real worker wrote, as a data lake (issue 20): few files,
event-time pruning of files and row groups, and the README's DuckDB query. Run on the store
of the MovieLens replay in tests/test_training_real_pipeline.py (no replay of its own)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.storage import open_store
from schemas.snapshots import SnapshotFile
from training.data import TimeRange, list_snapshots, scan_interaction_events

README = Path(__file__).resolve().parents[2] / "README.md"
MAX_FILES = 50  # MovieLens-100K; ~1,200 for its train split when files were dated by event time


def readme_query(root: Path) -> str:
    """The SQL block after the README's ``<!-- lake-query -->`` marker, on ``root``."""
    text = README.read_text()
    m = re.search(r"<!-- lake-query -->\s*```sql\n(.*?)```", text, re.S)
    assert m, "README: no ```sql block after <!-- lake-query -->"
    return m[1].replace("/path/to/storage", str(root))


def check_lake(url: str, files_written: int) -> None:
    """``url``: the local store (file://) the worker wrote, having written ``files_written``."""
    store = open_store(url)
    root = Path(url.removeprefix("file://"))
    snaps = [f for k in store.list("events/") if (f := SnapshotFile.parse(k))]
    assert len(snaps) == files_written <= MAX_FILES
    assert not any(f.legacy for f in snaps)

    # --since: the last week of event time lists a fraction of the files, and the scan's
    # filter skips row groups by their ts statistics.
    everything = list_snapshots(store, TimeRange())
    since = max(f.ts_max for f in everything) - timedelta(days=7)
    window = TimeRange(since=since)
    listed = list_snapshots(store, window)
    assert 0 < len(listed) < len(everything)
    assert all(f.ts_max >= since for f in listed)
    dataset = ds.dataset([str(root / f.key) for f in everything], format="parquet")
    at = pa.scalar(since, pa.timestamp("us", tz="UTC"))
    frags = list(dataset.get_fragments())
    kept = [rg for f in frags for rg in f.split_by_row_group(pc.field("ts") >= at)]
    assert 0 < len(kept) < sum(f.num_row_groups for f in frags)
    events, _ = scan_interaction_events(store, window)
    every = dataset.to_table(columns=["event_id", "ts"])
    recent = every.filter(pc.field("ts") >= at)
    assert len(events) == len(pc.unique(recent["event_id"]))

    # The README's DuckDB query, against what pyarrow reads from the same files.
    got = duckdb.sql(readme_query(root)).fetchall()
    rates = [str(root / f.key) for f in everything if f.event_type == "rate"]
    table = ds.dataset(rates, format="parquet").to_table(columns=["event_id", "item_id", "ts"])
    start = pa.scalar(datetime(1998, 1, 1, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
    table = table.filter(pc.field("ts") >= start)  # the query's WHERE
    counts = table.group_by("item_id").aggregate([("event_id", "count_distinct")])
    want = sorted(
        zip(
            counts["item_id"].to_pylist(),
            counts["event_id_count_distinct"].to_pylist(),
            strict=True,
        ),
        key=lambda r: (-r[1], r[0]),
    )[:10]
    assert len(got) == 10 and [(r[0], r[1]) for r in got] == want
