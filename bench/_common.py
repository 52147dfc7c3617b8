"""Helpers shared by the benchmarks: throwaway topic prefixes and a rich results table."""

from __future__ import annotations

import contextlib
import statistics
import uuid

from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.kafka import delete_topics, ensure_topics


def fresh_settings(base: Settings | None = None) -> Settings:
    base = base or Settings()
    s = base.with_sections(kafka={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}"})
    ensure_topics(s.kafka)
    return s


def cleanup(settings: Settings) -> None:
    # A benchmark's cleanup must not hide its results.
    with contextlib.suppress(Exception):
        delete_topics(settings.kafka, timeout=10)


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c != columns[0] else "left")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
