"""Read events from files: JSON lines (one event per line) or CMU course log lines.

Lines are read as bytes, so each one can be rejected on its own: invalid UTF-8 is a reason
(never silently replaced), and a line over :data:`MAX_LINE_BYTES` is rejected after reading
only its first bytes (its size and sha256 still say which line it was), so one huge line
costs neither the run nor the memory.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.errors import DatasetError
from schemas.cmu import parse_line
from schemas.codec import MAX_EVENT_BYTES, decode_event
from schemas.errors import EventValidationError
from schemas.events import Event

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "cmu")
MAX_LINE_BYTES = MAX_EVENT_BYTES  # the decoder's own limit: a longer line is no event
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Line:
    """One input line. ``raw`` is the exact bytes read, line ending included -- or, for a line
    over the limit, only its first bytes: then ``sha256`` identifies the whole line. ``size``
    and ``sha256`` are of the line without its ending."""

    no: int
    raw: bytes
    size: int
    sha256: str | None = None

    @property
    def cut(self) -> bool:
        return self.sha256 is not None

    @property
    def content(self) -> bytes:
        """The line without its ending (\\n or \\r\\n)."""
        return _content(self.raw)


def _content(raw: bytes) -> bytes:
    return raw[:-2] if raw.endswith(b"\r\n") else raw.removesuffix(b"\n")


@contextmanager
def open_source(source: str) -> Iterator[BinaryIO]:
    """``-`` is standard input; anything else a path (a clear error if it can't be read)."""
    if source == "-":
        yield sys.stdin.buffer
        return
    path = Path(source)
    try:
        f = path.open("rb")
    except OSError as err:
        raise DatasetError(f"cannot read {source}: {err.strerror}", dataset=source) from None
    with f:
        yield f


def read_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Every line of ``stream``, holding at most ``limit`` + 2 bytes of any one in memory."""
    n = 0
    while True:
        raw = stream.readline(limit + 2)  # room for the content and a \r\n
        if not raw:
            return
        n += 1
        if raw.endswith(b"\n") or len(raw) < limit + 2:
            yield Line(n, raw, len(_content(raw)))
            continue
        digest, size, chunk = hashlib.sha256(raw), len(raw), raw
        while chunk and not chunk.endswith(b"\n"):  # the rest of the line, hashed not kept
            chunk = stream.readline(_CHUNK)
            tail = _content(chunk)
            digest.update(tail)
            size += len(tail)
        yield Line(n, raw, size, digest.hexdigest())


def _parser(fmt: str, expected_type: str | None) -> Callable[[bytes, int], Event]:
    if fmt == "jsonl":
        return lambda line, _n: decode_event(line, expected_type=expected_type)

    def cmu(line: bytes, n: int) -> Event:
        event = parse_line(line.decode(), line_no=n)
        if expected_type and event.event_type != expected_type:
            raise EventValidationError(
                [("event_type", f"expected {expected_type!r}, got {event.event_type!r}")],
                event_type=event.event_type,
            )
        return event

    return cmu


def _invalid(line: Line) -> EventValidationError | None:
    """Why ``line`` cannot be an event before parsing it, if it cannot."""
    if line.size > MAX_LINE_BYTES:
        reason = f"{line.size} bytes is over the {MAX_LINE_BYTES} byte limit"
        return EventValidationError([("line", reason)])
    try:
        line.raw.decode()
    except UnicodeDecodeError as err:
        bad = line.raw[err.start : err.end]
        reason = f"not valid UTF-8 (at byte {err.start}: {bad.hex(' ')})"
        return EventValidationError([("line", reason)])
    return None


def read_events(
    stream: BinaryIO, fmt: str, *, expected_type: str | None = None
) -> Iterator[tuple[Line, Event | EventValidationError]]:
    """Each non-blank line with its event or the reason it was rejected. Never raises for a
    line: a parser failing unexpectedly rejects that line with the error as the reason."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}: use one of {FORMATS}", dataset="-")
    parse = _parser(fmt, expected_type)
    for line in read_lines(stream):
        if not line.cut and not line.raw.strip():
            continue
        result: Event | EventValidationError | None = _invalid(line)
        if result is None:
            try:
                result = parse(line.content, line.no)
            except EventValidationError as err:
                result = err
            except Exception as err:  # a parser bug must cost one line, not the run
                log.debug("line %d: unexpected parser error", line.no, exc_info=True)
                reason = f"unexpected error {type(err).__name__}: {err}"
                result = EventValidationError([("line", reason[:500])])
        yield line, result
