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
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from typing import Any, NamedTuple

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
_tz, _year = attrgetter("tzinfo"), attrgetter("year")
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


# --- a whole batch at once ------------------------------------------------------------
# The checks above, made over the batch's columns at C speed (str.join/isascii/isprintable,
# set unions, map over dict.get) instead of one regex and a dozen Python steps per event:
# ~5.4 -> ~2 us an event. A batch is decoded this way only if every event passes every
# check; otherwise it is split in halves down to _MIN_CHUNK events, and a chunk that still
# fails takes fast_decode event by event (so one odd event costs a few re-parses, and the
# results are always fast_decode's: tests/test_streams_decode.py compares them).
_MIN_CHUNK = 32
_DIGITS = str.maketrans("0123456789", "0000000000")
# The one timestamp shape with every digit as 0 (the batch's distinct shapes, a handful).
_SHAPE = re.compile(r"0000-00-00T00:00:00(?:\.0{1,6})?(?:Z|[+-]00:00)?").fullmatch
_ID_MAX = {"event_id": 128, "user_id": MAX_ID_LENGTH, "item_id": MAX_ID_LENGTH}
_NONE = type(None)
_get: Callable[..., Any] = dict.get  # over map(): columns of Any


class _Odd(Exception):
    """Some event of the chunk is not in the fast path's subset (or not for this check)."""


def _ids(column: list, hi: int) -> str:
    joined = "".join(column)  # TypeError: not all strings
    if min(map(len, column)) < 1 or max(map(len, column)) > hi:
        raise _Odd
    return joined


def _numbers(column: list, hi: float, none: bool) -> list:
    kinds = set(map(type, column))
    if not kinds <= ({float, int, _NONE} if none else {float, int}):
        raise _Odd
    present = [v for v in column if v is not None] if none and _NONE in kinds else column
    if present and (min(present) < 0 or max(present) > hi):
        raise _Odd
    if float not in kinds:  # ints (and None) only: as _number, floats
        return [None if v is None else float(v) for v in column]
    return column if int not in kinds else [None if v is None else float(v) for v in column]


def _chunk(values: list[bytes], event_type: str) -> list[EventRecord]:
    """Every event of ``values`` as fast_decode reads it, or raises (_Odd, TypeError, ...)."""
    n = len(values)
    ds = list(map(_loads, values))
    if set(map(type, ds)) != {dict} or not set().union(*ds) <= _KEYS[event_type]:
        raise _Odd
    if not set(map(_get, ds, repeat("event_type", n), repeat(event_type, n))) <= {event_type}:
        raise _Odd
    versions = list(map(_get, ds, repeat("schema_version", n), repeat(1, n)))
    if set(map(type, versions)) != {int} or min(versions) < 1:
        raise _Odd
    if max(versions) > _VERSION[event_type]:
        raise _Odd
    cols = {k: list(map(_get, ds, repeat(k, n))) for k in ("event_id", "user_id", "item_id")}
    text = "".join([_ids(cols[k], hi) for k, hi in _ID_MAX.items()])
    if not (text.isascii() and text.isprintable()) or " " in text or "," in text:
        raise _Odd
    stamps = list(map(_get, ds, repeat("ts", n)))
    joined = "\n".join(stamps)  # TypeError: not all strings
    if not joined.isascii() or joined.count("\n") != n - 1:
        raise _Odd
    if not all(map(_SHAPE, set(joined.translate(_DIGITS).split("\n")))):
        raise _Odd
    # Quotes: as in fast_decode, two per key and per string value, none repeated.
    quotes = list(map(bytes.count, values, repeat(b'"', n)))
    expect = [2 * (len(d) + 4 + ("event_type" in d)) for d in ds]
    if quotes != expect:
        raise _Odd
    dts = list(map(_fromiso, stamps))  # ValueError: not a date (e.g. Feb 30)
    if set(map(id, map(_tz, dts))) != {id(UTC)}:  # as fast_decode: UTC itself, not equal
        dts = [dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC) for dt in dts]
    years = list(map(_year, dts))
    if min(years) < _MIN_YEAR or max(years) >= _MAX_YEAR:
        raise _Odd
    epochs = list(map(datetime.timestamp, dts))
    types, nones = repeat(event_type, n), repeat(None, n)
    if event_type == "watch":
        minutes = list(map(_get, ds, repeat("minute", n)))
        kinds = set(map(type, minutes))
        if not kinds <= {int, _NONE}:
            raise _Odd
        present = [m for m in minutes if m is not None] if _NONE in kinds else minutes
        if present and (min(present) < 0 or max(present) > 100_000):
            raise _Odd
        seconds = _numbers(list(map(_get, ds, repeat("seconds", n))), 86_400, True)
        rows = zip(types, cols["event_id"], cols["user_id"], cols["item_id"], dts, epochs,
                   versions, minutes, seconds, nones, strict=True)  # fmt: skip
    else:
        ratings = _numbers(list(map(_get, ds, repeat("rating", n))), 5, False)
        rows = zip(types, cols["event_id"], cols["user_id"], cols["item_id"], dts, epochs,
                   versions, nones, repeat(None, n), ratings, strict=True)  # fmt: skip
    return list(map(_new, repeat(EventRecord, n), rows))


def fast_decode_many(
    values: list[bytes], event_type: str, depth: int = 4
) -> list[EventRecord | None]:
    """``[fast_decode(v, event_type) for v in values]``, at a fraction of the cost when most
    events are in the fast path's subset. Values must be bytes of at most MAX_EVENT_BYTES.
    A chunk with an odd event is halved at most ``depth`` times (then event by event), so a
    batch of odd events costs a few failed checks more than fast_decode alone."""
    if len(values) <= _MIN_CHUNK or depth <= 0:
        return [fast_decode(v, event_type) for v in values]
    try:
        if 92 in b"".join(values):  # a backslash somewhere: see fast_decode
            raise _Odd
        return _chunk(values, event_type)  # type: ignore[return-value]
    except (_Odd, TypeError, ValueError, OverflowError, orjson.JSONDecodeError):
        half = len(values) // 2
        return fast_decode_many(values[:half], event_type, depth - 1) + fast_decode_many(
            values[half:], event_type, depth - 1
        )
