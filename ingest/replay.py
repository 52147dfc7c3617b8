"""Replay MovieLens-100K through Kafka: the catalog to the compacted catalog topic, then each
rating as a ``watch`` and a ``rate`` event, in timestamp order.

The dataset is validated once against the event schema's own field types (every distinct
user id and item id, every rating and timestamp) so the per-event path only formats bytes:
this is what lets replay run close to a bare producer loop.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from core.config import KafkaSettings
from core.kafka import EventProducer
from ingest.errors import DatasetError
from ingest.movielens import MovieLens
from schemas.events import ItemId, UserId
from schemas.topics import RATE, WATCH

log = logging.getLogger(__name__)

Payload = tuple[str, bytes, bytes]  # (topic, key, value)
PROGRESS_EVERY = 2000  # events between on_progress calls


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
        ("user_id", TypeAdapter(UserId), dict.fromkeys(ml.users.tolist())),
        ("item_id", TypeAdapter(ItemId), dict.fromkeys(ml.items.tolist())),
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


def _json_of(label: str, values: list[Any]) -> dict[Any, str]:
    """orjson's JSON of each distinct value, made once: the per-event path pastes it."""
    out = {}
    for v in dict.fromkeys(values):
        try:
            out[v] = orjson.dumps(v).decode()
        except orjson.JSONEncodeError as err:
            raise DatasetError(f"{label} {v!r}: {err}", dataset="ml-100k") from None
    return out


def iter_payloads(ml: MovieLens) -> Iterator[Payload]:
    """Wire bytes for each rating: a watch event then a rate event. Byte-identical to
    ``schemas.codec.encode_event`` of the same events (tested)."""
    return _payloads(ml, WATCH, RATE)


def _payloads(ml: MovieLens, watch_topic: str, rate_topic: str) -> Iterator[Payload]:
    # The JSON orjson.dumps would make of each event's dict (compact, the schema's field
    # order), pasted from the JSON of each distinct id and rating: a dict and its encoding
    # per event cost as much again as this. The event id is make_event_id("ml100k", kind,
    # user, item, ts) spelled out, which skips its generic join (tested to be the same).
    users, items, ratings = ml.users.tolist(), ml.items.tolist(), ml.ratings.tolist()
    user_json, item_json = _json_of("user_id", users), _json_of("item_id", items)
    rating_json = _json_of("rating", ratings)
    keys = {u: u.encode() for u in user_json}
    stamps = np.datetime_as_string(ml.ts.astype("datetime64[s]"), unit="s").tolist()
    blake2b = hashlib.blake2b
    for user, item, rating, ts, stamp in zip(
        users, items, ratings, ml.ts.tolist(), stamps, strict=True
    ):
        tail = f"|{user}|{item}|{ts}".encode()
        watch_id = blake2b(b"ml100k|watch" + tail, digest_size=12).hexdigest()
        rate_id = blake2b(b"ml100k|rate" + tail, digest_size=12).hexdigest()
        rest = f'","user_id":{user_json[user]},"ts":"{stamp}Z","event_type":'
        item_j = item_json[item]
        key = keys[user]
        yield (
            watch_topic,
            key,
            (
                f'{{"schema_version":1,"event_id":"{watch_id}{rest}"watch","item_id":{item_j}}}'
            ).encode(),
        )
        yield (
            rate_topic,
            key,
            (
                f'{{"schema_version":1,"event_id":"{rate_id}{rest}"rate","item_id":{item_j},'
                f'"rating":{rating_json[rating]}}}'
            ).encode(),
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


def _paced(payloads: Iterator[Payload], pacer: _Pacer, ts: np.ndarray) -> Iterator[Payload]:
    for n, payload in enumerate(payloads):
        pacer.wait(n, float(ts[n // 2]))
        yield payload


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
    payloads = _payloads(ml, kafka.topic(WATCH), kafka.topic(RATE))
    if rate is not None or speedup is not None:
        t0 = float(ml.ts[0]) if len(ml) else 0.0
        payloads = _paced(payloads, _Pacer(rate, speedup, t0), ml.ts)
    # In chunks, so that progress costs nothing per event.
    while queued := producer.produce_many(islice(payloads, PROGRESS_EVERY)):
        stats.events += queued
        if on_progress is not None:
            on_progress(queued)
    producer.flush(120 if own else 60)
    stats.seconds = time.perf_counter() - start
    return stats
