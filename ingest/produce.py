"""Validate and publish events from a file or stdin. Rejected lines are not dropped: they
go to ``<prefix>.dead_letter`` with the reason, so nothing accepted from a source is lost.

Whatever happens, everything handed to the producer is waited for (delivered, or reported
failed after the delivery timeout). Each line whose message was not delivered is written,
byte for byte, to the failed file (default ``<input>.undelivered``), and :class:`NotDelivered`
names it: producing that file again completes the set. Event ids are deterministic per line,
so a line that did arrive after all is deduplicated downstream.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from core.config import KafkaSettings
from core.errors import KafkaError
from core.kafka import EventProducer
from ingest.errors import NotDelivered
from ingest.files import Line, open_source, read_events
from schemas.dead_letter import DeadLetter
from schemas.errors import ConfigError, EventValidationError
from schemas.topics import DEAD_LETTER

MAX_REASONS = 5


@dataclass
class ProduceReport:
    sent: int = 0
    rejected: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    undelivered: int = 0
    failed_file: Path | None = None


def default_failed_file(source: str) -> Path:
    return Path("stdin.undelivered" if source == "-" else f"{source}.undelivered")


@dataclass
class _Undelivered:
    """The lines whose message (event or dead letter) the broker did not confirm."""

    lines: dict[int, bytes] = field(default_factory=dict)
    uncopyable: int = 0  # over-long lines: only their first bytes were read
    reasons: list[str] = field(default_factory=list)

    def add(self, line: Line, reason: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"line {line.no}: {reason}")
        if line.cut:
            self.uncopyable += 1
        else:
            self.lines[line.no] = line.raw if line.raw.endswith(b"\n") else line.raw + b"\n"

    def __len__(self) -> int:
        return len(self.lines) + self.uncopyable

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                for n in sorted(self.lines):
                    f.write(self.lines[n])
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def _dead_letter(source: str, line: Line, err: EventValidationError) -> DeadLetter:
    letter = DeadLetter(
        value=line.content,
        key=None,
        source_topic=f"file:{source}",
        source_partition=0,
        source_offset=line.no,
        reason=err.reason,
        failed_at=time.time(),
    ).fit()
    if line.cut:  # only the first bytes were read: say what the whole line was
        letter = replace(
            letter, truncated=("value",), value_size=line.size, value_sha256=line.sha256
        )
    return letter


def produce_events(
    kafka: KafkaSettings,
    source: str,
    fmt: str = "jsonl",
    *,
    expected_type: str | None = None,
    producer: EventProducer | None = None,
    on_line: Callable[[], None] | None = None,
    failed_file: str | Path | None = None,
) -> ProduceReport:
    """Publish every valid event of ``source`` and dead-letter every invalid line. Raises
    NotDelivered (after waiting for every delivery report and writing the lines not
    delivered to ``failed_file``) if any delivery failed."""
    path = Path(failed_file) if failed_file else default_failed_file(source)
    if source != "-" and path.resolve() == Path(source).resolve():
        raise ConfigError(f"the failed file {path} must not be the input file")
    report = ProduceReport()
    start = time.perf_counter()
    producer = producer if producer is not None else EventProducer(kafka)
    dead_letter_topic = kafka.topic(DEAD_LETTER)
    undelivered = _Undelivered()
    try:
        with open_source(source) as stream:
            for line, result in read_events(stream, fmt, expected_type=expected_type):
                on_failure = partial(undelivered.add, line)
                try:
                    if isinstance(result, EventValidationError):
                        report.rejected += 1
                        if len(report.reasons) < MAX_REASONS:
                            report.reasons.append(f"line {line.no}: {result.reason}")
                        letter = _dead_letter(source, line, result)
                        producer.produce(
                            dead_letter_topic,
                            letter.value or b"",
                            letter.key,
                            letter.headers(),
                            on_failure=on_failure,
                        )
                    else:
                        producer.send(result, on_failure=on_failure)
                        report.sent += 1
                        t = result.event_type
                        report.by_type[t] = report.by_type.get(t, 0) + 1
                except KafkaError as err:  # refused before sending: this line only
                    on_failure(str(err))
                if on_line is not None:
                    on_line()
    finally:
        # Runs on any error too: what was accepted is delivered or named, never dropped.
        producer.drain()
        report.seconds = time.perf_counter() - start
        report.undelivered = len(undelivered)
        if undelivered.lines:
            try:
                undelivered.write(path)
                report.failed_file = path
            except OSError as err:
                undelivered.reasons.insert(0, f"cannot write {path}: {err.strerror}")
    if undelivered:
        if undelivered.uncopyable:
            undelivered.reasons.append(
                f"{undelivered.uncopyable} over-long rejected line(s) not copied"
            )
        raise NotDelivered(
            len(undelivered),
            undelivered.reasons,
            path=str(report.failed_file) if report.failed_file else None,
            report=report,
        )
    return report
