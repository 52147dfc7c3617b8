"""Benchmark: `replay --max` events/s against a bare confluent-kafka producer loop sending
the same bytes with the same producer settings, alternated in the same run.

Target: replay at >= 70% of the bare loop. Usage: python bench/produce.py [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer

from bench._common import cleanup, fresh_settings, median, print_table
from core.config import Settings
from core.kafka import producer_config
from ingest.movielens import load_movielens
from ingest.replay import iter_payloads, replay_movielens


def bare_loop(settings: Settings, payloads: list[tuple[str, bytes, bytes]]) -> float:
    """The baseline: produce pre-built bytes in a tight loop, then wait for delivery."""
    p = Producer(producer_config(settings.kafka))
    topics = {t: settings.topic(t) for t, _, _ in payloads[:2]}
    start = time.perf_counter()
    for t, key, value in payloads:
        while True:
            try:
                p.produce(topics[t], value, key)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    return len(payloads) / (time.perf_counter() - start)


def ours(settings: Settings, ml) -> float:
    stats = replay_movielens(settings.kafka, ml)
    return stats.events / stats.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    base = Settings()
    ml = load_movielens(base.cache_path).subset("all")
    payloads = list(iter_payloads(ml))
    bare: list[float] = []
    mine: list[float] = []
    for _ in range(args.runs):  # alternate so machine noise hits both alike
        for which in ("bare", "ours"):
            s = fresh_settings(base)
            try:
                if which == "bare":
                    bare.append(bare_loop(s, payloads))
                else:
                    mine.append(ours(s, ml))
            finally:
                cleanup(s)
    b, m = median(bare), median(mine)
    print_table(
        f"Producing MovieLens-100K ({len(payloads):,} events), median of {args.runs} runs",
        ["producer", "events/s (median)", "runs", "vs bare"],
        [
            [
                "bare confluent-kafka loop (same bytes)",
                f"{b:,.0f}",
                " ".join(f"{x:,.0f}" for x in bare),
                "1.00",
            ],
            [
                "streamrec replay --max",
                f"{m:,.0f}",
                " ".join(f"{x:,.0f}" for x in mine),
                f"{m / b:.2f}",
            ],
        ],
    )
    print(f"target: replay >= 0.70 x bare -> {'met' if m / b >= 0.7 else 'NOT met'}")


if __name__ == "__main__":
    main()
