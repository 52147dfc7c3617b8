"""``streamrec topics``: create the event topics (idempotent) and list them."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.kafka import admin_client, check_kafka, ensure_topics
from schemas.topics import TOPICS


def register(subs: argparse._SubParsersAction, help_text: str) -> None:
    p = subs.add_parser("topics", help=help_text, description=help_text)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    check_kafka(settings.kafka)
    created = ensure_topics(settings.kafka)
    meta = admin_client(settings.kafka).list_topics(timeout=10).topics
    table = Table(title=f"topics on {settings.kafka.bootstrap}")
    for col in ("topic", "partitions", "kind", "state"):
        table.add_column(col)
    for spec in TOPICS:
        name = settings.topic(spec.name)
        parts = len(meta[name].partitions) if name in meta else 0
        table.add_row(
            name,
            str(parts),
            "compacted" if spec.compacted else "event log",
            "created" if name in created else "exists",
        )
    console.print(table)
    return 0
