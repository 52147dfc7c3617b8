"""The item catalog (compacted ``<prefix>.catalog`` topic) as an in-memory genre map, mirrored
to ``{p}:catalog:{item}``. Every worker reads the whole topic (no consumer group): each needs
every item's genres for the genre affinities."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from core.config import Settings
from core.errors import KafkaError
from schemas.catalog import ItemRecord
from schemas.codec import decode_item
from schemas.errors import EventValidationError
from schemas.topics import CATALOG

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, settings: Settings, on_items: Callable[[list[ItemRecord]], object]) -> None:
        self.topic = settings.topic(CATALOG)
        self.genres: dict[str, tuple[str, ...]] = {}
        self.invalid = 0
        self._on_items = on_items
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                # Required by librdkafka; never committed or joined (partitions are assigned).
                "group.id": f"{settings.topic_prefix}.catalog-reader.{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )

    def bootstrap(self, timeout: float = 60.0) -> int:
        """Read the topic from the beginning to its current end. Returns items known."""
        try:
            meta = self._consumer.list_topics(self.topic, timeout=10)
            parts = sorted(meta.topics[self.topic].partitions)
            ends = {}
            for p in parts:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=10
                )
                if high > low:
                    ends[p] = high
        except (KafkaException, KeyError) as err:
            raise KafkaError(f"cannot read catalog topic {self.topic}: {err}") from None
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout
        done: dict[int, int] = {}
        while any(done.get(p, -1) + 1 < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise KafkaError(f"timed out reading catalog topic {self.topic}")
            for p, off in self.poll(timeout=0.5).items():
                done[p] = max(done.get(p, -1), off)
        log.info("catalog: %d items from %s", len(self.genres), self.topic)
        return len(self.genres)

    def poll(self, timeout: float = 0.0) -> dict[int, int]:
        """Apply new catalog records; returns the last offset seen per partition."""
        msgs = self._consumer.consume(1000, timeout)
        seen: dict[int, int] = {}
        items = []
        for m in msgs:
            if m.error():
                continue
            seen[m.partition()] = m.offset()
            if m.value() is None:  # tombstone: the item left the catalog
                key = m.key()
                if key:
                    self.genres.pop(key.decode(errors="replace"), None)
                continue
            try:
                item = decode_item(m.value())
            except EventValidationError as err:
                self.invalid += 1
                log.warning("catalog record at offset %d skipped: %s", m.offset(), err)
                continue
            self.genres[item.item_id] = tuple(item.genres)
            items.append(item)
        if items:
            self._on_items(items)
        return seen

    def close(self) -> None:
        self._consumer.close()
