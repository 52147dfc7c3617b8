"""Replay MovieLens-100K through Kafka: the catalog to the compacted catalog topic, then each
rating as a ``watch`` and a ``rate`` event, in timestamp order.

The dataset is validated once against the event schema's own field types (every distinct
user id and item id, every rating and timestamp) so the per-event path only formats bytes:
this is what lets replay run close to a bare producer loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from core.config import KafkaSettings
from core.kafka import EventProducer
from ingest.errors import DatasetError
from ingest.movielens import MovieLens
from schemas.events import ItemId, UserId, make_event_id
from schemas.topics import RATE, WATCH

log = logging.getLogger(__name__)

Payload = tuple[str, bytes, bytes]  # (logical topic, key, value)


@dataclass
class ReplayStats:
    events: int = 0
    items: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def validate_dataset(ml: MovieLens) -> None:
    """Check every value against the event schema; raises DatasetError naming the first bad
    value. Distinct ids are few (943 users, 1,682 items), so this is cheap."""
    for label, adapter, values in (
        ("user_id", TypeAdapter(UserId), np.unique(ml.users)),
        ("item_id", TypeAdapter(ItemId), np.unique(ml.items)),
    ):
        for v in values:
            try:
                adapter.validate_python(v)
            except ValidationError as err:
                msg = err.errors()[0]["msg"]
                raise DatasetError(f"{label} {v!r}: {msg}", dataset="ml-100k") from None
    bad = np.flatnonzero((ml.ratings < 0) | (ml.ratings > 5) | ~np.isfinite(ml.ratings))
    if bad.size:
        raise DatasetError(
            f"rating {ml.ratings[bad[0]]} out of 0-5 at row {bad[0]}", dataset="ml-100k"
        )
    if (ml.ts <= 0).any():
        raise DatasetError("non-positive timestamp", dataset="ml-100k")


def iter_payloads(ml: MovieLens) -> Iterator[Payload]:
    """Wire bytes for each rating: a watch event then a rate event. Byte-identical to
    ``schemas.codec.encode_event`` of the same events (tested)."""
    stamps = np.datetime_as_string(ml.ts.astype("datetime64[s]"), unit="s")
    dumps = orjson.dumps
    for user, item, rating, ts, stamp in zip(
        ml.users, ml.items, ml.ratings.tolist(), ml.ts.tolist(), stamps, strict=True
    ):
        key = user.encode()
        iso = f"{stamp}Z"
        yield (
            WATCH,
            key,
            dumps(
                {
                    "schema_version": 1,
                    "event_id": make_event_id("ml100k", "watch", user, item, ts),
                    "user_id": user,
                    "ts": iso,
                    "event_type": "watch",
                    "item_id": item,
                }
            ),
        )
        yield (
            RATE,
            key,
            dumps(
                {
                    "schema_version": 1,
                    "event_id": make_event_id("ml100k", "rate", user, item, ts),
                    "user_id": user,
                    "ts": iso,
                    "event_type": "rate",
                    "item_id": item,
                    "rating": rating,
                }
            ),
        )


class _Pacer:
    """Sleeps to hold a target events/s (``rate``) or event-time speed-up (``speedup``)."""

    def __init__(self, rate: float | None, speedup: float | None, t0_event: float) -> None:
        self.rate, self.speedup, self.t0_event = rate, speedup, t0_event
        self.start = time.monotonic()

    def wait(self, n_sent: int, event_ts: float) -> None:
        if self.rate:
            due = self.start + n_sent / self.rate
        elif self.speedup:
            due = self.start + (event_ts - self.t0_event) / self.speedup
        else:
            return
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def replay_movielens(
    kafka: KafkaSettings,
    ml: MovieLens,
    *,
    rate: float | None = None,
    speedup: float | None = None,
    producer: EventProducer | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Publish the catalog and all events of ``ml`` (already split and time-ordered).
    Waits for every delivery report; raises DeliveryFailed if any message was lost."""
    if rate is not None and rate <= 0:
        raise DatasetError(f"--rate must be positive, got {rate}", dataset="ml-100k")
    if speedup is not None and speedup <= 0:
        raise DatasetError(f"--speedup must be positive, got {speedup}", dataset="ml-100k")
    validate_dataset(ml)
    own = producer is None
    producer = producer if producer is not None else EventProducer(kafka)
    stats = ReplayStats()
    start = time.perf_counter()
    for item in ml.catalog:
        producer.send_item(item)
        stats.items += 1
    topic = {WATCH: kafka.topic(WATCH), RATE: kafka.topic(RATE)}
    pacer = _Pacer(rate, speedup, float(ml.ts[0]) if len(ml) else 0.0)
    paced = rate is not None or speedup is not None
    ts = ml.ts
    produce = producer.produce
    for n, (logical, key, value) in enumerate(iter_payloads(ml)):
        if paced:
            pacer.wait(n, float(ts[n // 2]))
        produce(topic[logical], value, key)
        if on_progress is not None and n % 2000 == 1999:
            on_progress(2000)
    stats.events = 2 * len(ml)
    producer.flush(120 if own else 60)
    stats.seconds = time.perf_counter() - start
    if on_progress is not None:
        on_progress(stats.events % 2000)
    return stats
