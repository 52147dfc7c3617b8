"""Encoding and validation of events on the wire (JSON bytes <-> typed events).

Validation errors name the field and the reason, e.g.
``invalid watch event: item_id: String should match pattern ...``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.catalog import ItemRecord
from schemas.errors import EventValidationError
from schemas.events import EVENT_TYPES, AnyEvent, Event

MAX_EVENT_BYTES = 64 * 1024  # far above any real event; guards the worker against junk


@cache
def _any_event() -> TypeAdapter[Event]:
    return TypeAdapter(AnyEvent)


def _errors(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"] if not str(x).endswith("Event")) or "event"
        # In a discriminated union pydantic prefixes the location with the tag; drop it.
        parts = loc.split(".")
        if parts and parts[0] in EVENT_TYPES:
            loc = ".".join(parts[1:]) or "event"
        out.append((loc, e["msg"].removeprefix("Value error, ")))
    return out


_UNPARSED = object()


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def unique_keys(raw: bytes, data: Any = _UNPARSED) -> bool:
    """True when the JSON text ``raw`` parses (to ``data``, if given) and certainly repeats no
    key in any object; False when it may (then :func:`duplicate_key` tells).

    orjson and pydantic silently keep the last of repeated keys. The cheap proof: without a
    backslash every ``"`` in the text delimits a string, so the text holds as many as the
    compact re-encoding of what it parses to, and each repeated key would add two more."""
    if 92 in raw:  # a backslash
        return False
    try:
        if data is _UNPARSED:
            data = orjson.loads(raw)
        return raw.count(b'"') == orjson.dumps(data).count(b'"')
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # nested past orjson's dumps
        return False


def duplicate_key(raw: bytes | str) -> str | None:
    """A key that occurs twice in one object of the JSON text ``raw``, or None."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if unique_keys(data):
        return None
    try:
        json.loads(data, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as dup:
        return dup.key
    except (ValueError, RecursionError):
        # orjson parsed it but the stdlib would not (it nests less deep): no event nests
        # deeper than a list of ids, so such a document fails the model anyway.
        pass
    return None


def _event_type_hint(data: Any) -> str | None:
    if isinstance(data, dict):
        t = data.get("event_type")
        return t if isinstance(t, str) and t in EVENT_TYPES else None
    return None


def decode_event(raw: bytes | str | dict[str, Any], *, expected_type: str | None = None) -> Event:
    """Validate one event from JSON bytes/str or a dict. Raises EventValidationError."""
    if isinstance(raw, bytes | bytearray | memoryview | str):
        if len(raw) > MAX_EVENT_BYTES:
            raise EventValidationError(
                [("event", f"{len(raw)} bytes is over the {MAX_EVENT_BYTES} byte limit")],
                event_type=expected_type,
            )
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise EventValidationError([("event", f"not valid JSON: {err}")]) from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise EventValidationError([("event", "must be a JSON object")])
    if not isinstance(raw, dict) and (dup := duplicate_key(raw)) is not None:
        raise EventValidationError(
            [(dup[:64], "duplicate key: a JSON object must not repeat a key")],
            event_type=_event_type_hint(data) or expected_type,
        )
    if expected_type is not None and "event_type" not in data:
        data = {**data, "event_type": expected_type}
    hint = _event_type_hint(data)
    if hint is None:
        got = data.get("event_type")
        raise EventValidationError(
            [("event_type", f"must be one of {sorted(EVENT_TYPES)}, got {got!r}")]
        )
    if expected_type is not None and hint != expected_type:
        raise EventValidationError(
            [("event_type", f"expected {expected_type!r}, got {hint!r}")], event_type=hint
        )
    version = data.get("schema_version", 1)
    if isinstance(version, int) and version > EVENT_TYPES[hint].SCHEMA_VERSION:
        raise EventValidationError(
            [
                (
                    "schema_version",
                    f"{version} is newer than this reader's "
                    f"{EVENT_TYPES[hint].SCHEMA_VERSION}; upgrade streamrec",
                )
            ],
            event_type=hint,
        )
    try:
        return _any_event().validate_python(data)
    except ValidationError as err:
        raise EventValidationError(_errors(err), event_type=hint) from None


def encode_event(event: Event | ItemRecord) -> bytes:
    """Compact JSON bytes for the wire."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def decode_item(raw: bytes | str | dict[str, Any]) -> ItemRecord:
    try:
        if isinstance(raw, dict):
            return ItemRecord.model_validate(raw)
        return ItemRecord.model_validate_json(raw)
    except ValidationError as err:
        raise EventValidationError(_errors(err), event_type="catalog") from None
