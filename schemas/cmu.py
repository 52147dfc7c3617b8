"""Parser for the CMU "ML in Production" movie-stream log lines::

    2024-02-07T05:30:53,463441,GET /data/m/the+lion+king+1994/103.mpg
    2024-02-07T05:30:53.123,463441,GET /rate/the+lion+king+1994=4
    2024-02-07T05:31:02.512643,398934,recommendation request 17645-team03.isri.cmu.edu:8082,
        status 200, result: movie1, movie2, ..., 254 ms          (one line in the log)

Timestamps come at second, microsecond or nanosecond precision; Python keeps microseconds,
so nanoseconds are truncated (the event id still hashes the full line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError

from schemas.errors import EventValidationError, LogLineError
from schemas.events import Event, RateEvent, RecoResponseEvent, WatchEvent, make_event_id

CHUNK_SECONDS = 60  # each /data/m/<movie>/<n>.mpg request is one minute of the movie

_TS = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$"
)
_WATCH = re.compile(r"^GET /data/m/(?P<item>[^/\s]+)/(?P<minute>\d+)\.mpg$")
_RATE = re.compile(r"^GET /rate/(?P<item>[^=\s]+)=(?P<rating>-?\d+(?:\.\d+)?)$")
# The lazy result tries every position of the line; the bounded tail after it keeps each try
# short, so a long line costs linear time (unbounded \s*/\d+ there made it quadratic).
_RECO = re.compile(
    r"^recommendation request (?P<server>[^,]*),\s*status (?P<status>\d+),\s*"
    r"result: (?P<result>.*?),?\s{0,16}(?P<latency>\d{1,20}(?:\.\d{1,20})?)\s{0,16}ms$"
)
# Far above any real line (a 1000-item result is ~40 KB); the JSON lines' limit too.
MAX_LINE_CHARS = 64 * 1024


def parse_timestamp(text: str) -> datetime:
    m = _TS.match(text.strip())
    if not m:
        raise ValueError(f"timestamp {text!r} is not ISO 8601 (YYYY-MM-DDTHH:MM:SS[.frac])")
    date, time, frac, zone = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]  # nanoseconds -> microseconds (truncated)
    iso = f"{date}T{time}.{micro}" + ("+00:00" if zone in (None, "Z") else zone)
    try:
        return datetime.fromisoformat(iso).astimezone(UTC)
    except (ValueError, OverflowError) as err:  # OverflowError: before year 1 or after 9999 in UTC
        raise ValueError(f"timestamp {text!r}: {err}") from None


# More digits than any minute index, status or latency has; Python refuses int() of over
# 4300 digits with a ValueError, and a long number is junk anyway.
_MAX_DIGITS = 20


N = TypeVar("N", int, float)


def _number(text: str, name: str, kind: Callable[[str], N]) -> N:
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"{name}: {len(text)} digits is out of range")
    return kind(text)


def parse_line(line: str, *, line_no: int | None = None) -> Event:
    """One log line -> one event. Raises LogLineError naming what is wrong."""
    if len(line) > MAX_LINE_CHARS:
        raise LogLineError(
            line[:200],
            f"{len(line)} characters is over the {MAX_LINE_CHARS} limit",
            line_no=line_no,
        )
    text = line.strip()
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise LogLineError(text, "expected '<time>,<user>,<request>'", line_no=line_no)
    ts_text, user, request = parts[0], parts[1].strip(), parts[2].strip()
    try:
        ts = parse_timestamp(ts_text)
    except ValueError as err:
        raise LogLineError(text, str(err), line_no=line_no) from None
    event_id = make_event_id("cmu", text)
    try:
        if m := _WATCH.match(request):
            return WatchEvent(
                event_id=event_id,
                user_id=user,
                item_id=m["item"],
                minute=_number(m["minute"], "minute", int),
                seconds=CHUNK_SECONDS,
                ts=ts,
            )
        if m := _RATE.match(request):
            return RateEvent(
                event_id=event_id,
                user_id=user,
                item_id=m["item"],
                rating=_number(m["rating"], "rating", float),
                ts=ts,
            )
        if m := _RECO.match(request):
            status = _number(m["status"], "status", int)
            items = (
                [i.strip() for i in m["result"].split(",") if i.strip()] if status == 200 else []
            )
            return RecoResponseEvent(
                event_id=event_id,
                request_id=event_id,
                user_id=user,
                items=items,
                model_name="external",
                model_version="unknown",
                variant="external",
                latency_ms=_number(m["latency"], "latency_ms", float),
                status=status,
                ts=ts,
            )
    except ValidationError as err:
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise LogLineError(text, fields, line_no=line_no) from None
    except ValueError as err:  # a number too long to read (_number)
        raise LogLineError(text, str(err), line_no=line_no) from None
    raise LogLineError(
        text,
        f"unknown request {request[:80]!r} (expected GET /data/m/..., GET /rate/... "
        "or 'recommendation request ...')",
        line_no=line_no,
    )


def parse_lines(lines: Iterable[str], *, start: int = 1) -> Iterator[Event | EventValidationError]:
    """Parse many lines, yielding the error in place of a bad line (never raising), so a
    caller can count and report rejects while keeping the good ones. Blank lines are skipped."""
    for n, line in enumerate(lines, start):
        if not line.strip():
            continue
        try:
            yield parse_line(line, line_no=n)
        except EventValidationError as err:
            yield err
