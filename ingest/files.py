"""Read events from files: JSON lines (one event per line) or CMU course log lines."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ingest.errors import DatasetError
from schemas.cmu import parse_lines
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


def read_events(
    lines: TextIO, fmt: str, *, expected_type: str | None = None
) -> Iterator[tuple[int, str, Event | EventValidationError]]:
    """(line number, raw line, event or the reason it was rejected) for each non-blank line."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}: use one of {FORMATS}", dataset="-")
    if fmt == "cmu":
        raw_lines: list[str] = []

        def remember() -> Iterator[str]:
            for line in lines:
                raw_lines.append(line)
                yield line

        n = 0
        for result in parse_lines(remember()):
            # parse_lines skips blanks; recover the line number from what it consumed.
            n = len(raw_lines)
            if expected_type and isinstance(result, Event) and result.event_type != expected_type:
                result = EventValidationError(
                    [("event_type", f"expected {expected_type!r}, got {result.event_type!r}")],
                    event_type=result.event_type,
                )
            yield n, raw_lines[-1], result
        return
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, line, decode_event(line, expected_type=expected_type)
        except EventValidationError as err:
            yield n, line, err
