"""Read events from files: JSON lines (one event per line) or CMU course log lines."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ingest.errors import DatasetError
from schemas.cmu import parse_line
from schemas.codec import decode_event
from schemas.errors import EventValidationError
from schemas.events import Event

FORMATS = ("jsonl", "cmu")


@contextmanager
def open_source(source: str) -> Iterator[TextIO]:
    """``-`` is standard input; anything else a path (a clear error if it can't be read)."""
    if source == "-":
        yield sys.stdin
        return
    path = Path(source)
    try:
        f = path.open(encoding="utf-8", errors="replace")
    except OSError as err:
        raise DatasetError(f"cannot read {source}: {err.strerror}", dataset=source) from None
    with f:
        yield f


def _parser(fmt: str, expected_type: str | None) -> Callable[[str, int], Event]:
    if fmt == "jsonl":
        return lambda line, _n: decode_event(line, expected_type=expected_type)

    def cmu(line: str, n: int) -> Event:
        event = parse_line(line, line_no=n)
        if expected_type and event.event_type != expected_type:
            raise EventValidationError(
                [("event_type", f"expected {expected_type!r}, got {event.event_type!r}")],
                event_type=event.event_type,
            )
        return event

    return cmu


def read_events(
    lines: TextIO, fmt: str, *, expected_type: str | None = None
) -> Iterator[tuple[int, str, Event | EventValidationError]]:
    """(line number, raw line, event or the reason it was rejected) for each non-blank line."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}: use one of {FORMATS}", dataset="-")
    parse = _parser(fmt, expected_type)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = parse(line, n)
        except EventValidationError as err:
            yield n, line, err
        else:
            yield n, line, event
