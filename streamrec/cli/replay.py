"""``streamrec replay movielens-100k``: publish the catalog and ratings as watch+rate events."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from core.config import Settings
from core.kafka import check_kafka, ensure_topics
from ingest.movielens import load_movielens
from ingest.replay import replay_movielens
from schemas.errors import ConfigError

DATASETS = ("movielens-100k",)


def _rate(text: str) -> float:
    value = text.removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N/s, got {text!r}") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("rate must be positive")
    return rate


def register(subs: argparse._SubParsersAction, help_text: str) -> None:
    p = subs.add_parser("replay", help=help_text, description=help_text)
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="all",
        help="per-user temporal split: test = each user's last 20%% (default all)",
    )
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_rate, help="events per second, e.g. 5000/s")
    pace.add_argument("--max", action="store_true", help="as fast as possible (default)")
    pace.add_argument(
        "--speedup",
        type=float,
        help="event-time speed-up: 3600 replays an hour of events per second",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.speedup is not None and args.speedup <= 0:
        raise ConfigError("--speedup must be positive")
    console = Console(stderr=True)
    check_kafka(settings.kafka)
    ensure_topics(settings.kafka)
    with console.status("loading MovieLens-100K…"):
        ml = load_movielens(settings.cache_path).subset(args.split)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"replay {args.split}", total=2 * len(ml))
        stats = replay_movielens(
            settings.kafka,
            ml,
            rate=args.rate,
            speedup=args.speedup,
            on_progress=lambda n: progress.advance(task, n),
        )
    console.print(
        f"replayed {stats.events:,} events ({len(ml):,} ratings, split={args.split}) and "
        f"{stats.items:,} catalog items in {stats.seconds:.2f} s: {stats.rate:,.0f} events/s, "
        f"all delivered to {settings.topic('watch')} and {settings.topic('rate')}"
    )
    return 0
