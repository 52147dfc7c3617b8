"""``streamrec produce``: validate and publish events from a JSONL or CMU log file."""

from __future__ import annotations

import argparse

from rich.console import Console

from core.config import Settings
from core.kafka import check_kafka, ensure_topics
from ingest.errors import NotDelivered
from ingest.files import FORMATS
from ingest.produce import ProduceReport, produce_events
from schemas.events import EVENT_TYPES
from schemas.topics import TOPIC_OF_EVENT

EXIT_REJECTED = 3  # everything valid was delivered, but some input was rejected


def register(subs: argparse._SubParsersAction, help_text: str) -> None:
    p = subs.add_parser("produce", help=help_text, description=help_text)
    p.add_argument("--file", "-f", required=True, help="input file, or - for stdin")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="jsonl: one event object per line; cmu: course log lines",
    )
    p.add_argument(
        "--topic",
        choices=sorted({*TOPIC_OF_EVENT.values()}),
        help="require every event to belong to this topic (events are routed by type)",
    )
    p.add_argument(
        "--failed-file",
        help="where to write the lines not delivered, to produce again "
        "(default: <file>.undelivered, stdin.undelivered for -)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console(stderr=True)
    expected = None
    if args.topic:
        expected = next(t for t, topic in TOPIC_OF_EVENT.items() if topic == args.topic)
        assert expected in EVENT_TYPES
    check_kafka(settings.kafka)
    ensure_topics(settings.kafka)
    try:
        with console.status("producing…"):
            report = produce_events(
                settings.kafka,
                args.file,
                args.format,
                expected_type=expected,
                failed_file=args.failed_file,
            )
    except NotDelivered as err:
        if isinstance(err.report, ProduceReport):
            _summary(console, err.report, settings, confirmed=False)
        raise
    return _summary(console, report, settings, confirmed=True)


def _summary(
    console: Console, report: ProduceReport, settings: Settings, *, confirmed: bool
) -> int:
    types = ", ".join(f"{t}={n}" for t, n in sorted(report.by_type.items())) or "none"
    delivery = (
        "delivery confirmed by the broker"
        if confirmed
        else f"{report.undelivered} line(s) not delivered"
    )
    console.print(
        f"sent {report.sent} ({types}), rejected {report.rejected} "
        f"in {report.seconds:.2f} s; {delivery}"
    )
    for reason in report.reasons:
        console.print(f"  rejected {reason}", markup=False, highlight=False)
    if report.rejected:
        console.print(f"rejected lines were sent to {settings.topic('dead_letter')}")
        return EXIT_REJECTED
    return 0
