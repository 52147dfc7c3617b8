"""Validate and publish events from a file or stdin. Rejected lines are not dropped: they
go to ``<prefix>.dead_letter`` with the reason, so nothing accepted from a source is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import Settings
from core.kafka import EventProducer
from ingest.files import open_source, read_events
from schemas.dead_letter import DeadLetter
from schemas.errors import EventValidationError
from schemas.topics import DEAD_LETTER

MAX_REASONS = 5


@dataclass
class ProduceReport:
    sent: int = 0
    rejected: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


def produce_events(
    settings: Settings,
    source: str,
    fmt: str = "jsonl",
    *,
    expected_type: str | None = None,
    producer: EventProducer | None = None,
    on_line: Callable[[], None] | None = None,
) -> ProduceReport:
    """Publish every valid event of ``source``; raises DeliveryFailed if any delivery
    failed (after waiting for all delivery reports)."""
    report = ProduceReport()
    start = time.perf_counter()
    producer = producer or EventProducer(settings)
    dead_letter_topic = settings.topic(DEAD_LETTER)
    with open_source(source) as lines:
        for line_no, raw, result in read_events(lines, fmt, expected_type=expected_type):
            if isinstance(result, EventValidationError):
                report.rejected += 1
                if len(report.reasons) < MAX_REASONS:
                    report.reasons.append(f"line {line_no}: {result.reason}")
                letter = DeadLetter(
                    value=raw.rstrip("\n").encode(),
                    key=None,
                    source_topic=f"file:{source}",
                    source_partition=0,
                    source_offset=line_no,
                    reason=result.reason,
                    failed_at=time.time(),
                )
                producer.produce(dead_letter_topic, letter.value, None, letter.headers())
            else:
                producer.send(result)
                report.sent += 1
                report.by_type[result.event_type] = report.by_type.get(result.event_type, 0) + 1
            if on_line is not None:
                on_line()
    producer.flush()
    report.seconds = time.perf_counter() - start
    return report
