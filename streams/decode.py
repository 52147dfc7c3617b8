"""Bytes -> typed event, or a dead letter with the precise reason (pure; no I/O).

Watch and rate events in the common shape take :func:`streams.fast_decode.fast_decode_many`
(light records, no model per event, a batch's checks made over its columns); other events,
and any watch or rate it does not accept, are parsed by orjson, checked for repeated keys
and validated into the event model of the topic's event type, as the reference decoder does
but without its error handling.
Anything that rejects goes through :func:`schemas.codec.decode_event`, the reference decoder,
which raises the precise reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from schemas.codec import MAX_EVENT_BYTES, decode_event, unique_keys
from schemas.dead_letter import DeadLetter
from schemas.errors import EventValidationError
from schemas.events import EVENT_TYPES, Event
from streams.fast_decode import FAST_TYPES, EventRecord, fast_decode_many

# One Kafka record as the worker sees it: (offset, key, value, timestamp in ms or None).
RawRecord = tuple[int, bytes | None, bytes | None, float | None]


@dataclass(slots=True)
class Decoded:
    """A partition's batch after validation: good events (with their offsets and producer
    timestamps, in offset order) and dead letters."""

    events: list[Event | EventRecord] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    produced_ms: list[float | None] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


_loads = orjson.loads


def _validator(event_type: str) -> Callable[[dict], Event]:
    return EVENT_TYPES[event_type].model_validate


def _model(value: bytes, validate: Callable[[dict], Event]) -> Event | None:
    """``value`` as the model validates it, or None when anything is off (then the reference
    decoder decides, and says why). Parsing with orjson and validating the object costs less
    than pydantic's own JSON parsing plus a second parse to find repeated keys, which
    pydantic would silently drop."""
    if len(value) > MAX_EVENT_BYTES:
        return None
    try:
        data = _loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not unique_keys(value, data):
        return None
    try:
        event = validate(data)
    except ValidationError:
        return None
    return event if event.schema_version <= event.SCHEMA_VERSION else None


def decode_one(value: bytes | None, event_type: str) -> Event:
    """Validate one message value as an event of ``event_type``; raises
    EventValidationError with the reason (field and message)."""
    if value is None:
        raise EventValidationError([("event", "empty message (no value)")], event_type=event_type)
    event = _model(value, _validator(event_type))
    return event if event is not None else decode_event(value, expected_type=event_type)


def _fast_many(records: list[RawRecord], event_type: str) -> list[EventRecord | None]:
    """fast_decode of each record's value (None: not in its subset, too big or no value),
    decoded as one batch (:func:`streams.fast_decode.fast_decode_many`)."""
    values: list = [r[2] for r in records]
    if None not in values and max(map(len, values), default=0) <= MAX_EVENT_BYTES:
        return fast_decode_many(values, event_type)
    fit = [j for j, v in enumerate(values) if v is not None and len(v) <= MAX_EVENT_BYTES]
    out: list[EventRecord | None] = [None] * len(values)
    got = fast_decode_many([values[j] for j in fit], event_type)
    for j, rec in zip(fit, got, strict=True):
        out[j] = rec
    return out


def decode_batch(
    records: Iterable[RawRecord],
    *,
    event_type: str,
    topic: str,
    partition: int,
    now: float,
) -> Decoded:
    """Validate a partition's records. Invalid ones become dead letters carrying the original
    bytes, the source topic/partition/offset and the reason; the rest keep their order."""
    out = Decoded()
    records = records if isinstance(records, list) else list(records)
    validate = _validator(event_type)
    pre = _fast_many(records, event_type) if event_type in FAST_TYPES else None
    if pre is not None and None not in pre:  # all in the fast subset: columns as they are
        out.events = pre  # type: ignore[assignment]
        out.offsets = [r[0] for r in records]
        out.produced_ms = [r[3] for r in records]
        return out
    add_event, add_offset, add_ts = out.events.append, out.offsets.append, out.produced_ms.append
    for j, (offset, key, value, ts_ms) in enumerate(records):
        if value is not None and len(value) <= MAX_EVENT_BYTES:
            rec = pre[j] if pre is not None else None
            if rec is not None:
                add_event(rec)
                add_offset(offset)
                add_ts(ts_ms)
                continue
            event = _model(value, validate)
            if event is not None:
                add_event(event)
                add_offset(offset)
                add_ts(ts_ms)
                continue
        try:
            event = decode_one(value, event_type)
        except EventValidationError as err:
            out.dead.append(
                DeadLetter(
                    value=value,
                    key=key,
                    source_topic=topic,
                    source_partition=partition,
                    source_offset=offset,
                    reason=err.reason,
                    failed_at=now,
                )
            )
            continue
        add_event(event)
        add_offset(offset)
        add_ts(ts_ms)
    return out
