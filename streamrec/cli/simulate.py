"""``streamrec simulate``: closed-loop simulated users against the live API."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table

from core.config import Settings

if TYPE_CHECKING:
    from rollout.simulator import SimStats


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("simulate", help=help_text, description=help_text)
    p.add_argument(
        "--users",
        default="test-split",
        choices=["test-split"],
        help="who is simulated: users of the MovieLens-100K test split (their held-out "
        "interactions are their future)",
    )
    p.add_argument("--rate", default="50/s", help="requests per second, e.g. 50/s")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--max-requests", type=int, help="stop after this many requests")
    p.add_argument("--api", help="API base URL on this machine (default: serve_port)")
    p.add_argument("--k", type=int, default=10, help="items asked per request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    p.set_defaults(func=run)


def table(st: SimStats) -> Table:
    t = Table(
        title=f"simulate: {st.sent} sent, {st.ok} ok, {st.errors} errors, "
        f"{st.watches} watches in {st.elapsed:.0f} s"
    )
    for col in ("variant", "requests", "watches", "conversion"):
        t.add_column(col, justify="right")
    for label, c in sorted(st.by_variant.items()):
        t.add_row(label, str(c.requests), str(c.watches), f"{c.conversion:.1%}")
    return t


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.movielens import load_movielens
    from rollout.errors import SimulatorError
    from rollout.simulator import Simulator, future_interactions, parse_rate

    rate = parse_rate(args.rate)
    if args.duration <= 0 or (args.max_requests is not None and args.max_requests <= 0):
        raise SimulatorError("--duration and --max-requests must be positive")
    if not 1 <= args.k <= settings.serve.max_k:
        raise SimulatorError(f"--k must be within 1..{settings.serve.max_k}")
    test = load_movielens(settings.cache_path).subset("test")
    sim = Simulator(
        settings.kafka,
        settings.simulate,
        args.api or f"http://127.0.0.1:{settings.serve.port}",
        future_interactions(test.users, test.items),
        rate=rate,
        k=args.k,
        seed=args.seed,
        concurrency=max(1, args.concurrency),
    )
    console = Console()
    with Live(table(sim.stats), console=console, refresh_per_second=2) as live:
        st = asyncio.run(
            sim.run(
                duration_s=args.duration,
                max_requests=args.max_requests,
                on_tick=lambda s: live.update(table(s)),
            )
        )
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(st.statuses.items()))
    console.print(
        f"simulate: {st.sent} requests in {st.elapsed:.1f} s ({st.sent / st.elapsed:.0f}/s), "
        f"{st.errors} errors (statuses {statuses or 'none'}), {st.watches} watch events"
        + (f", {st.dropped_events} dropped" if st.dropped_events else "")
    )
    for line in st.first_errors:
        console.print(f"  first errors: {line}")
    return 1 if st.errors else 0
