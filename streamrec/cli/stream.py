"""``streamrec stream``: run a stream worker (Kafka -> Redis features + Parquet snapshots).

Several workers (processes, machines) with the same settings share the partitions of the
event topics. ``--until-caught-up`` exits once every assigned partition has no lag and all
is committed, with a progress display and a one-line summary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from core.config import Settings
from core.kafka import check_kafka

if TYPE_CHECKING:
    from streams.parts import Worker


def register(subs: argparse._SubParsersAction, help_text: str) -> None:
    p = subs.add_parser("stream", help=help_text, description=help_text)
    p.add_argument(
        "--workers-metrics-port",
        "--metrics-port",
        dest="metrics_port",
        type=int,
        default=None,
        metavar="PORT",
        help="port of this worker's /metrics (default STREAMREC_STREAM_METRICS_PORT; "
        "0: a free port; -1: none)",
    )
    p.add_argument(
        "--until-caught-up",
        action="store_true",
        help="exit when all assigned partitions have no lag and everything is committed",
    )
    p.add_argument(
        "--engine",
        choices=("confluent", "faust"),
        default=None,
        help="consumer engine (default STREAMREC_STREAM_ENGINE, confluent): confluent-kafka "
        "or a faust-streaming agent; same processing and commit-after-durable",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import run_worker

    console = Console(stderr=True)
    check_kafka(settings.kafka)
    if not args.until_caught_up:
        summary = run_worker(settings, metrics_port=args.metrics_port, engine=args.engine)
    else:
        with Live(Text("starting..."), console=console, refresh_per_second=4) as live:

            def tick(worker: Worker) -> None:
                totals, p = worker.totals, worker.progress
                live.update(
                    Text(
                        f"processed {totals.processed:,}  "
                        f"dead-lettered {totals.dead_lettered:,}  "
                        f"files {totals.files_written:,}  "
                        f"partitions {p.assigned}  "
                        f"lag {'?' if p.lag < 0 else f'{p.lag:,}'}"
                    )
                )

            summary = run_worker(
                settings,
                until_caught_up=True,
                metrics_port=args.metrics_port,
                on_tick=tick,
                engine=args.engine,
            )
    console.print(
        f"stream: {summary.processed:,} events processed, "
        f"{summary.dead_lettered:,} dead-lettered, {summary.files_written:,} files written, "
        f"{summary.elapsed_s:.1f} s"
    )
    return 0
