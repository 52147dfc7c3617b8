"""Benchmark of the stream worker on the real local stack (``streamrec stack up`` first).

1. Throughput: the worker (Kafka -> validate -> Redis features + Parquet, commit after
   durable) over a backlog of events, next to a bare confluent-kafka consumer reading the
   same topics in the same run, on two workloads:

   - ``sessions``: 20,000 users and 3,000 items (Zipf-like popularity), 75% watch / 25%
     rate, in short per-user sessions like the CMU watch stream;
   - ``movielens``: the MovieLens-100K replay (``ingest.replay.replay_movielens``: catalog,
     then each rating as a watch and a rate event in timestamp order; 200,000 events of
     943 users and 1,682 items, users interleaved as in the dataset).
2. Freshness at a fixed rate (default 5,000 events/s): time from produce to the event's
   features being visible in Redis, measured from outside by polling probe users, next to
   the produce -> consume latency of a bare consumer at the same rate (measured first).

Both engines (``--engines confluent,faust``) read the same backlog of each run, each in a
consumer group and Redis key space of its own.

Usage: ``python bench/streams.py [--events 300000] [--runs 3] [--rate 5000] [--seconds 20]
[--workloads sessions,movielens] [--freshness-runs 3] [--engines confluent,faust]``.
Medians over the runs are reported; every run uses throwaway topics and Redis keys, deleted
afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._streams_load import (  # noqa: E402
    bare_consumer_rate,
    cleanup,
    cleanup_keys,
    fresh_settings,
    freshness_bare,
    freshness_worker,
    pct,
    produce_backlog,
    produce_movielens,
    worker_rate,
)
from core.config import Settings  # noqa: E402
from core.kafka import ensure_topics  # noqa: E402


def engine_settings(s: Settings, engine: str) -> Settings:
    """The run's topics, read by ``engine`` in a group and Redis key space of its own."""
    tag = f"{s.redis_key_prefix}{engine[0]}"
    return s.model_copy(update={"stream_app_id": f"bench-{engine}", "redis_key_prefix": tag})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--freshness-runs", type=int, default=3)
    ap.add_argument("--workloads", default="sessions,movielens")
    ap.add_argument("--engines", default="confluent,faust")
    args = ap.parse_args()
    engines = args.engines.split(",")
    console = Console()
    base = Settings()
    tmp = tempfile.mkdtemp(prefix="streamrec-bench-")
    # Freshness first, on a quiet stack: the throughput runs' deleted topics are removed by
    # the broker a minute later (file.delete.delay.ms), which shows up as latency spikes.
    # engine -> (worker p50, p99, bare p50, p99) per run
    fresh: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for run in range(args.freshness_runs):
        for engine in engines:
            s = fresh_settings(base, tmp)
            ensure_topics(s)
            try:
                fw = freshness_worker(s, args.rate, args.seconds, engine)
                fb = freshness_bare(s, args.rate, args.seconds)
            finally:
                cleanup(s)
            f = (pct(fw, 0.5), pct(fw, 0.99), pct(fb, 0.5), pct(fb, 0.99))
            fresh[engine].append(f)
            console.print(
                f"freshness run {run + 1} ({engine}): worker p50 {f[0] * 1000:.0f} ms "
                f"p99 {f[1] * 1000:.0f} ms ({len(fw)} probes); bare p99 {f[3] * 1000:.0f} ms"
            )
    # (workload, engine or "bare") -> rates of the runs
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    for workload in args.workloads.split(","):
        for run in range(args.runs):
            s = fresh_settings(base, tmp)
            ensure_topics(s)
            try:
                if workload == "movielens":
                    n = produce_movielens(s)
                else:
                    n = args.events
                    produce_backlog(s, n, seed=run)
                rates[workload, "bare"].append(bare_consumer_rate(s, n))
                for engine in engines:
                    es = engine_settings(s, engine)
                    try:
                        rates[workload, engine].append(worker_rate(es, n, engine))
                    finally:
                        cleanup_keys(es)
            finally:
                cleanup(s)
            console.print(
                f"{workload} run {run + 1}: "
                + ", ".join(f"{e} {rates[workload, e][-1]:,.0f}" for e in [*engines, "bare"])
                + " ev/s"
            )
    med = statistics.median
    load = os.getloadavg()[0]
    table = Table(
        title=f"stream worker on {os.cpu_count()} cores, load avg {load:.1f} (medians of runs)"
    )
    for col in ("measure", "engine", "worker", "same-run baseline", "baseline is", "target"):
        table.add_column(col)
    for workload in args.workloads.split(","):
        for engine in engines:
            table.add_row(
                f"throughput, {workload} (events/s)",
                engine,
                f"{med(rates[workload, engine]):,.0f}",
                f"{med(rates[workload, 'bare']):,.0f}",
                "bare confluent consumer",
                ">= 50,000",
            )
    for engine, runs in fresh.items():
        for q, i, target in (("p50", 0, ""), ("p99", 1, "< 1,000 ms")):
            table.add_row(
                f"freshness {q} @ {args.rate:,}/s",
                engine,
                f"{med(f[i] for f in runs) * 1000:.0f} ms",
                f"{med(f[i + 2] for f in runs) * 1000:.0f} ms",
                "produce -> bare consume",
                target,
            )
    console.print(table)


if __name__ == "__main__":
    main()
