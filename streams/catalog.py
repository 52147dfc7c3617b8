"""The item catalog (compacted ``<prefix>.catalog`` topic) as an in-memory genre map, mirrored
to ``{p}:catalog:{item}``. Every worker reads the whole topic (no consumer group): each needs
every item's genres for the genre affinities."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from core.config_infra import KafkaSettings
from core.errors import KafkaError
from schemas.catalog import ItemRecord
from schemas.codec import decode_item
from schemas.errors import EventValidationError
from schemas.topics import CATALOG

log = logging.getLogger(__name__)


class Catalog:
    def __init__(
        self, kafka: KafkaSettings, app_id: str, on_items: Callable[[list[ItemRecord]], object]
    ) -> None:
        """``app_id``: the stream app's id, which names the reader's one stable group id."""
        self.topic = kafka.topic(CATALOG)
        self.genres: dict[str, tuple[str, ...]] = {}
        self.invalid = 0
        self._on_items = on_items
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap,
                # Required by librdkafka, but never joined or committed (the partitions are
                # assigned): one stable id per app instead of a fresh one per start.
                "group.id": f"{kafka.topic(app_id)}.catalog-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            }
        )

    def _end_offsets(self) -> tuple[list[int], dict[int, int]]:
        """The partitions, and the end offset of each non-empty one as the broker reports it
        now. Raises KafkaError (the caller retries) while the topic is not fully available
        yet: right after its creation a partition may have no leader, and its watermarks
        then read as missing rather than empty (once taken for an empty catalog: 0 items)."""
        try:
            meta = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            if meta.error is not None or not meta.partitions:
                raise KafkaError(f"catalog topic {self.topic} not available: {meta.error}")
            ends = {}
            for p, pm in sorted(meta.partitions.items()):
                if pm.error is not None or pm.leader < 0:
                    raise KafkaError(f"catalog topic {self.topic}[{p}] has no leader yet")
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=10
                )
                if low < 0 or high < 0:
                    raise KafkaError(f"catalog topic {self.topic}[{p}]: no offsets yet")
                if high > low:
                    ends[p] = high
            return sorted(meta.partitions), ends
        except (KafkaException, KeyError) as err:
            raise KafkaError(f"cannot read catalog topic {self.topic}: {err}") from None

    def bootstrap(self, timeout: float = 60.0) -> int:
        """Read the topic from the beginning up to the end offsets observed at the start.
        Returns items known. Raises KafkaError (retried by the worker) if the topic is not
        available yet or the end is not reached within ``timeout``."""
        parts, ends = self._end_offsets()
        # Every partition, the empty ones too: poll() follows the topic afterwards.
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout
        done: dict[int, int] = {}
        while any(done.get(p, -1) + 1 < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise KafkaError(
                    f"timed out reading catalog topic {self.topic}: at {done}, end {ends}"
                )
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
            # A message without error has its partition and offset.
            seen[m.partition()] = m.offset()  # type: ignore[index,assignment]
            value = m.value()
            if value is None:  # tombstone: the item left the catalog
                key = m.key()
                if key:
                    self.genres.pop(key.decode(errors="replace"), None)
                continue
            try:
                item = decode_item(value)
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
