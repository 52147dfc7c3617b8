"""The hot path of decoding: watch and rate events as light records, without building a
pydantic model per event (5 us per event against 1.5 us here, the largest single cost of
the consumer thread on the MovieLens replay).

The fast path accepts only a strict, common subset of what the event models accept, and only
values it reads exactly as pydantic would (tests/test_streams_decode.py compares the two on
generated inputs): a JSON object with no unknown keys, ASCII ids of the allowed characters,
``ts`` as ``YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM]`` within the models' years, plain JSON
numbers in range, and no backslash and no repeated key. Anything else -- invalid or merely
unusual (a non-ASCII id, an escaped character) -- returns None and goes through the pydantic
model, which accepts it or gives the dead letter's precise reason. So the fast path never
decides that an event is invalid; it only accepts some valid ones sooner.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from schemas.events import MAX_ID_LENGTH, MAX_TS, MIN_TS, RateEvent, WatchEvent


class EventRecord(NamedTuple):
    """A validated watch or rate event with the attributes of its model (plus ``epoch``,
    the event time as epoch seconds), so the processor reads both alike."""

    event_type: str
    event_id: str
    user_id: str
    item_id: str
    ts: datetime
    epoch: float
    schema_version: int = 1
    minute: int | None = None
    seconds: float | None = None
    rating: float | None = None


# event_id, user_id, item_id and ts joined by NULs, checked in one match: the id pattern (no
# whitespace, comma or control character) restricted to ASCII, within the ids' lengths, and
# the one timestamp shape. Longer or non-ASCII ids take the pydantic path.
_ASCII_ID = r"[\x21-\x2b\x2d-\x7e]"
_CHECK = re.compile(
    rf"{_ASCII_ID}{{1,128}}\x00{_ASCII_ID}{{1,{MAX_ID_LENGTH}}}\x00{_ASCII_ID}{{1,{MAX_ID_LENGTH}}}"
    r"\x00[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?"
).fullmatch
_KEYS = {
    "watch": frozenset({"event_type", "schema_version", "event_id", "user_id", "ts", "item_id"})
    | {"minute", "seconds"},
    "rate": frozenset(
        {"event_type", "schema_version", "event_id", "user_id", "ts", "item_id", "rating"}
    ),
}
_VERSION = {"watch": WatchEvent.SCHEMA_VERSION, "rate": RateEvent.SCHEMA_VERSION}
FAST_TYPES = frozenset(_KEYS)

_loads = orjson.loads
_new = tuple.__new__  # skips NamedTuple's Python-level __new__
_fromiso = datetime.fromisoformat
# The models' bounds are the starts of these years (tests/test_streams_decode.py checks it),
# so comparing the UTC year is the same test and cheaper.
_MIN_YEAR, _MAX_YEAR = MIN_TS.year, MAX_TS.year


def _number(v: object, hi: float) -> float | None:
    """A JSON number in [0, hi] as float, else None (bool is not a number here)."""
    t = type(v)
    if (t is float or t is int) and 0 <= v <= hi:  # type: ignore[operator]
        return float(v)  # type: ignore[arg-type]
    return None


def fast_decode(value: bytes, event_type: str) -> EventRecord | None:
    """The event if ``value`` is in the fast path's subset, else None (use the model)."""
    # A backslash (92; testing an int is a memchr, several times faster than b"\\" in): then
    # every '"' delimits a string, which the repeated-key check below relies on.
    if 92 in value:
        return None
    try:
        d = _loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(d) is not dict or not d.keys() <= _KEYS[event_type]:
        return None
    get = d.get
    if get("event_type", event_type) != event_type:
        return None
    version = get("schema_version", 1)
    if type(version) is not int or not 1 <= version <= _VERSION[event_type]:
        return None
    eid, user, item, ts = get("event_id"), get("user_id"), get("item_id"), get("ts")
    try:
        if not _CHECK("\x00".join((eid, user, item, ts))):  # type: ignore[arg-type]
            return None
    except TypeError:  # one of them is not a string (or missing)
        return None
    # Two quotes per key and per string value (the four above and event_type; the other
    # values must be numbers or null): a repeated key, which orjson drops, adds two more.
    if value.count(b'"') != 2 * (len(d) + 4 + ("event_type" in d)):
        return None
    try:
        dt = _fromiso(ts)  # type: ignore[arg-type]  # a str: the join above raised otherwise
    except ValueError:
        return None
    # As schemas.events._utc: a naive time is UTC, an aware one is converted to UTC, and
    # both must fall within the bounds.
    tz = dt.tzinfo
    if tz is not UTC:
        try:
            dt = dt.replace(tzinfo=UTC) if tz is None else dt.astimezone(UTC)
        except OverflowError:
            return None
    if not _MIN_YEAR <= dt.year < _MAX_YEAR:
        return None
    if event_type == "watch":
        minute, seconds = get("minute"), get("seconds")
        if minute is not None and (type(minute) is not int or not 0 <= minute <= 100_000):
            return None
        if seconds is not None and (seconds := _number(seconds, 86_400)) is None:
            return None
        return _new(
            EventRecord,
            ("watch", eid, user, item, dt, dt.timestamp(), version, minute, seconds, None),
        )
    rating = _number(get("rating"), 5)
    if rating is None:
        return None
    return _new(
        EventRecord, ("rate", eid, user, item, dt, dt.timestamp(), version, None, None, rating)
    )
