"""The item catalog the ranker's genre and release-year features come from.

Sources, in the order ``auto`` tries them:

1. ``topic``: the compacted ``<prefix>.catalog`` topic, read from the beginning to its end.
   It is the platform's source of truth (replay and producers publish it; serving mirrors
   it into Redis), and compaction keeps it small.
2. ``movielens``: the MovieLens-100K catalog from the local dataset cache, used only when
   it is already downloaded and its ids cover the interactions (offline development).
3. ``none``: no catalog; genre and release-age features are NaN (LightGBM handles missing
   values), everything else works.

Event snapshots do not include the catalog (the stream processor snapshots events only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config_infra import KafkaSettings
from schemas.catalog import ItemRecord
from schemas.codec import decode_item
from schemas.errors import EventValidationError
from schemas.topics import CATALOG
from training.errors import CatalogError

log = logging.getLogger(__name__)

SOURCES = ("auto", "topic", "movielens", "none")
MIN_COVERAGE = 0.5  # a catalog covering fewer of the items is someone else's catalog


@dataclass
class ItemCatalog:
    """Catalog columns aligned with an item id array."""

    source: str
    genres: np.ndarray  # n_items x n_genres float32 0/1
    genre_names: np.ndarray  # str
    release_years: np.ndarray  # float (NaN unknown)
    coverage: float  # share of items the catalog knows

    @classmethod
    def empty(cls, n_items: int) -> ItemCatalog:
        return cls("none", np.zeros((n_items, 0), np.float32), np.zeros(0, dtype=str),
                   np.full(n_items, np.nan), 0.0)  # fmt: skip

    @classmethod
    def align(cls, records: Iterable[ItemRecord], item_ids: np.ndarray, source: str) -> ItemCatalog:
        by_id = {r.item_id: r for r in records}
        names = sorted({g for r in by_id.values() for g in r.genres})
        col = {g: i for i, g in enumerate(names)}
        genres = np.zeros((len(item_ids), len(names)), np.float32)
        years = np.full(len(item_ids), np.nan)
        known = 0
        for j, item in enumerate(item_ids.tolist()):
            rec = by_id.get(item)
            if rec is None:
                continue
            known += 1
            for g in rec.genres:
                genres[j, col[g]] = 1.0
            if rec.year is not None:
                years[j] = rec.year
        coverage = known / len(item_ids) if len(item_ids) else 0.0
        return cls(source, genres, np.asarray(names, dtype=str), years, coverage)


def read_catalog_topic(kafka: KafkaSettings, *, timeout_s: float = 10.0) -> list[ItemRecord]:
    """Every record of the compacted catalog topic (latest per item wins)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    topic = kafka.topic(CATALOG)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"{kafka.topic_prefix}-trainer-catalog",
            "enable.auto.commit": False,
            "socket.timeout.ms": int(timeout_s * 1000),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return []
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low:
                ends[tp.partition] = high
        if not ends:
            return []
        consumer.assign([tp for tp in parts if tp.partition in ends])
        records: dict[str, ItemRecord] = {}
        bad = 0
        while ends:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise CatalogError(f"timed out reading {topic}", source="topic")
            if msg.error():
                continue
            value, offset, partition = msg.value(), msg.offset(), msg.partition()
            if value is not None:
                try:
                    rec = decode_item(value)
                    records[rec.item_id] = rec
                except EventValidationError:
                    bad += 1
            # A consumed message has both (librdkafka's types allow None for produced ones).
            if (
                offset is not None
                and partition is not None
                and offset + 1 >= ends.get(partition, 0)
            ):
                ends.pop(partition, None)
        if bad:
            log.warning("skipped %d invalid catalog records in %s", bad, topic)
        return list(records.values())
    except KafkaException as err:
        raise CatalogError(f"cannot read {topic}: {err}", source="topic") from err
    finally:
        consumer.close()


def load_catalog(
    kafka: KafkaSettings, cache_dir: Path, item_ids: np.ndarray, source: str = "auto"
) -> ItemCatalog:
    """The item catalogue aligned to ``item_ids``: from the catalog topic (``kafka``), else
    MovieLens-100K's when its wheel is cached under ``cache_dir``, else empty."""
    if source not in SOURCES:
        raise CatalogError(
            f"unknown catalog source {source!r}: use {', '.join(SOURCES)}", source=source
        )
    if source == "none":
        return ItemCatalog.empty(len(item_ids))
    if source in ("auto", "topic"):
        try:
            cat = ItemCatalog.align(read_catalog_topic(kafka), item_ids, "topic")
        except CatalogError as err:
            if source == "topic":
                raise
            log.info("catalog topic unavailable (%s); trying the next source", err)
        else:
            if cat.coverage >= MIN_COVERAGE or source == "topic":
                return cat
    if source in ("auto", "movielens"):
        from ingest.movielens import WHEEL_FILE, load_movielens

        cached = (cache_dir / "datasets" / WHEEL_FILE).exists()
        if cached or source == "movielens":
            cat = ItemCatalog.align(load_movielens(cache_dir).catalog, item_ids, "movielens")
            if cat.coverage >= MIN_COVERAGE or source == "movielens":
                return cat
    log.info("no catalog covers the items; genre and release-age features will be missing")
    return ItemCatalog.empty(len(item_ids))
