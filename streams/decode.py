"""Bytes -> typed event, or a dead letter with the precise reason (pure; no I/O).

Watch and rate events in the common shape take :func:`streams.fast_decode.fast_decode`
(light records, no model per event); other events, and any watch or rate it does not
accept, are parsed by orjson, checked for repeated keys and validated into the event model
of the topic's event type, as the reference decoder does but without its error handling.
Anything that rejects goes through :func:`schemas.codec.decode_event`, the reference decoder,
which raises the precise reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import orjson
from pydantic import ValidationError

from schemas.codec import MAX_EVENT_BYTES, decode_event, unique_keys
from schemas.dead_letter import DeadLetter
from schemas.errors import EventValidationError
from schemas.events import EVENT_TYPES, Event
from streams.batch_decode import decode_many
from streams.fast_decode import FAST_TYPES, EventRecord, fast_decode

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


def decode_batch(
    records: Sequence[RawRecord],
    *,
    event_type: str,
    topic: str,
    partition: int,
    now: float,
) -> Decoded:
    """Validate a partition's records. Invalid ones become dead letters carrying the original
    bytes, the source topic/partition/offset and the reason; the rest keep their order."""
    out = Decoded()
    if event_type in FAST_TYPES:
        _decode_runs(records, out, event_type, topic, partition, now)
    else:
        _decode_each(records, out, event_type, topic, partition, now)
    return out


# Below this many records a run is decoded event by event (fast_decode): the batch decoder
# costs ~15 us a call whatever the size, and a refused run is halved down to this.
_MIN_RUN = 16
_value, _offset, _produced = itemgetter(2), itemgetter(0), itemgetter(3)


def _decode_runs(
    records: Sequence[RawRecord], out: Decoded, event_type: str, topic: str, partition: int,
    now: float,
) -> None:  # fmt: skip
    """Watch and rate records through the batch decoder; a run it refuses (something in it
    is odd or invalid) is halved until the odd events are decoded one by one."""
    if len(records) < _MIN_RUN:  # the batch decoder's fixed cost is more than it saves
        _decode_each(records, out, event_type, topic, partition, now)
        return
    recs = decode_many(list(map(_value, records)), event_type)
    if recs is not None:
        out.events.extend(recs)
        out.offsets.extend(map(_offset, records))
        out.produced_ms.extend(map(_produced, records))
    else:
        half = len(records) // 2
        _decode_runs(records[:half], out, event_type, topic, partition, now)
        _decode_runs(records[half:], out, event_type, topic, partition, now)


def _decode_each(
    records: Iterable[RawRecord], out: Decoded, event_type: str, topic: str, partition: int,
    now: float,
) -> None:  # fmt: skip
    validate = _validator(event_type)
    fast = event_type in FAST_TYPES
    add_event, add_offset, add_ts = out.events.append, out.offsets.append, out.produced_ms.append
    for offset, key, value, ts_ms in records:
        if value is not None and len(value) <= MAX_EVENT_BYTES:
            rec = fast_decode(value, event_type) if fast else None
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
