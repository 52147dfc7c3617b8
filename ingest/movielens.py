"""MovieLens-100K, read from the ``recbole==1.2.1`` wheel (which ships it as RecBole atomic
files under ``recbole/dataset_example/ml-100k/``). The wheel is fetched once with
``pip download --no-deps`` into the cache; recbole itself is never installed."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ingest.errors import DatasetError
from schemas.catalog import ItemRecord
from schemas.split import temporal_test_mask

log = logging.getLogger(__name__)

WHEEL = "recbole==1.2.1"
WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
N_RATINGS = 100_000


def fetch_wheel(cache_dir: Path) -> Path:
    """The cached wheel, downloading it from the package index on first use."""
    target = cache_dir / "datasets" / WHEEL_FILE
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (MovieLens-100K ships inside it)", WHEEL)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = Path(tmp) / WHEEL_FILE
        if proc.returncode != 0 or not got.exists():
            raise DatasetError(
                f"could not download {WHEEL}: {proc.stderr.strip()[-300:]}", dataset="ml-100k"
            )
        got.replace(target)  # atomic: a half-downloaded wheel is never seen as cached
    return target


def _read_member(wheel: Path, suffix: str) -> pa.Table:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MEMBER.format(suffix))
    # Atomic files: tab-separated, header "name:type"; latin-1 titles (1990s data).
    text = raw.decode("latin-1").encode()
    table = pacsv.read_csv(
        io.BytesIO(text),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(
            strings_can_be_null=False,
            column_types={
                "item_id:token": pa.string(),
                "user_id:token": pa.string(),
                "release_year:token": pa.string(),
            },
        ),
    )
    return table.rename_columns([c.split(":")[0] for c in table.column_names])


@dataclass(frozen=True)
class MovieLens:
    """Ratings as parallel arrays (string ids, as on the wire) plus the catalog."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    ratings: np.ndarray  # float32
    ts: np.ndarray  # int64 epoch seconds
    catalog: tuple[ItemRecord, ...]

    def __len__(self) -> int:
        return len(self.users)

    @cached_property
    def test_mask(self) -> np.ndarray:
        return temporal_test_mask(self.users, self.ts)

    def interactions(self) -> pa.Table:
        """The ratings as the trainer reads snapshots: user_id, item_id, ts (UTC, µs) and
        rating columns (``training.data.build_interactions`` takes it as is)."""
        return pa.table(
            {
                "user_id": pa.array(self.users.tolist(), pa.string()),
                "item_id": pa.array(self.items.tolist(), pa.string()),
                "ts": pa.array((self.ts * 1_000_000).tolist(), pa.timestamp("us", tz="UTC")),
                "rating": pa.array(self.ratings, pa.float32()),
            }
        )

    def subset(self, split: str) -> MovieLens:
        """``train``, ``test`` or ``all``, each in timestamp order (stable)."""
        if split == "all":
            keep = np.ones(len(self), dtype=bool)
        elif split in ("train", "test"):
            keep = self.test_mask if split == "test" else ~self.test_mask
        else:
            raise DatasetError(
                f"unknown split {split!r}: use train, test or all", dataset="ml-100k"
            )
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(self.ts[idx], kind="stable")]
        return MovieLens(
            self.users[idx], self.items[idx], self.ratings[idx], self.ts[idx], self.catalog
        )


def _catalog(table: pa.Table) -> tuple[ItemRecord, ...]:
    records = []
    for row in table.to_pylist():
        year = row.get("release_year") or ""
        records.append(
            ItemRecord(
                item_id=str(row["item_id"]),
                title=(row.get("movie_title") or "").strip() or f"item {row['item_id']}",
                year=int(year) if year.isdigit() else None,
                genres=[g for g in (row.get("class") or "").split(" ") if g],
            )
        )
    return tuple(records)


def load_movielens(cache_dir: Path) -> MovieLens:
    """Load all 100,000 ratings and the 1,682-item catalog (downloading on first use)."""
    wheel = fetch_wheel(cache_dir)
    try:
        inter = _read_member(wheel, "inter")
        items = _read_member(wheel, "item")
    except (KeyError, zipfile.BadZipFile, pa.ArrowInvalid) as err:
        raise DatasetError(
            f"{wheel} is not a readable {WHEEL} wheel: {err}", dataset="ml-100k"
        ) from err
    ml = MovieLens(
        users=np.asarray(inter["user_id"].to_pylist(), dtype=object),
        items=np.asarray(inter["item_id"].to_pylist(), dtype=object),
        ratings=inter["rating"].to_numpy().astype(np.float32),
        ts=inter["timestamp"].to_numpy().astype(np.int64),
        catalog=_catalog(items),
    )
    if len(ml) != N_RATINGS:
        raise DatasetError(f"expected {N_RATINGS} ratings, read {len(ml)}", dataset="ml-100k")
    return ml
