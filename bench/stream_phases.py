"""Where the stream worker's loop spends its time while events should become visible
(issue 20, the freshness tail): a worker with every loop phase timed (consume, process =
decode + waiting for the previous Redis call + submit, the Parquet cadence, lag, trending)
runs in a process of its own while events are produced at a fixed rate with probe users
(as ``bench/streams.py``'s freshness). Prints the probes' p50/p99/max and, for the slowest
probes, the loop phases that ran while each waited.

Usage: ``python bench/stream_phases.py [--rate 5000] [--seconds 20] [--backlog 0]``
(``--backlog N``: N session events first; probes start once the worker has drained them,
so a Parquet flush of the backlog is in progress or due).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Per loop iteration: consume; process (decode, prepare the Redis call, buffer rows) without
# what is nested in it; waiting for the Redis call in flight (in process and before a flush
# is cut; the online-evaluation join of the batch before runs on the Redis thread after it);
# the online-evaluation join on the loop's thread (before a flush is cut); committing a
# durable flush job; the rest of the Parquet cadence (cutting a job); lag; trending; catalog.
PHASES = (
    "consume", "process", "redis_wait", "online_eval", "commit", "flush", "lag", "trending",
    "catalog",
)  # fmt: skip


def run_timed_worker(out: str) -> None:
    """The worker process: StreamWorker's loop with each phase timed; phases written to
    ``out`` (JSON) on SIGTERM."""
    from collections import defaultdict

    from core.config import Settings
    from streams.metrics import StreamMetrics
    from streams.worker import Cadence, StreamWorker

    rows: list[list[float]] = []

    class Timed(StreamWorker):
        def _loop(self, consumer, parts) -> None:  # a copy of StreamWorker._loop, timed
            s, proc = self.settings, parts.processor
            acc: dict[str, float] = defaultdict(float)
            loop_thread = threading.get_ident()

            def timed(obj, name: str, key: str) -> None:
                plain = getattr(obj, name)

                def call(*a, **kw):
                    if threading.get_ident() != loop_thread:  # the join on the Redis thread
                        return plain(*a, **kw)  # is inside redis_wait
                    t = time.perf_counter()
                    try:
                        return plain(*a, **kw)
                    finally:
                        acc[key] += time.perf_counter() - t

                setattr(obj, name, call)

            # Nested inside process / poll_flush; subtracted from them below.
            timed(proc.applier, "wait", "redis_wait")
            timed(proc.online_eval, "apply", "online_eval")
            timed(proc, "_finish", "commit")
            batch_s = s.stream.redis_batch_ms / 1000
            cap = Cadence(s.stream.redis_batch_min_events, s.stream.redis_batch_events)
            next_tick = 0.0
            clock = time.perf_counter
            while not self.stop_event.is_set():
                t0, wall = clock(), time.time()
                msgs = consumer.consume(cap.events, batch_s)
                cap.update(len(msgs))
                t1 = clock()
                acc.clear()
                if msgs:
                    by_tp = defaultdict(list)
                    for m in msgs:
                        if not m.error():
                            by_tp[(m.topic(), m.partition())].append(
                                (m.offset(), m.key(), m.value(), m.timestamp()[1] or None)
                            )
                    proc.process(by_tp)
                t2 = clock()
                nested_process = sum(acc.values())
                parts.catalog.poll()
                t3 = clock()
                proc.poll_flush()
                t4 = clock()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._update_lag(consumer, proc)
                t5 = clock()
                parts.trending.tick(now, proc.max_event_ts)
                t6 = clock()
                nested_flush = sum(acc.values()) - nested_process
                rows.append(
                    [wall, len(msgs), t1 - t0, t2 - t1 - nested_process, acc["redis_wait"],
                     acc["online_eval"], acc["commit"], t4 - t3 - nested_flush, t5 - t4,
                     t6 - t5, t3 - t2]
                )  # fmt: skip

    # Garbage-collector pauses (any thread; they hold the GIL): (wall start, generation, s).
    pauses: list[list[float]] = []
    started: list[float] = [0.0, 0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.time(), time.perf_counter()]
        else:
            pauses.append([started[0], info["generation"], time.perf_counter() - started[1]])

    gc.callbacks.append(on_gc)
    worker = Timed(Settings(), StreamMetrics())
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    Path(out).write_text(json.dumps({"rows": rows, "gc": pauses}))


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from bench._streams_load import (
        cleanup,
        fresh_settings,
        freshness_bare,
        paced_produce,
        pct,
        produce_backlog,
    )
    from bench._streams_procs import settings_env
    from core.config import Settings
    from core.kafka import EventProducer, ensure_topics
    from core.redis import connect
    from schemas.redis_keys import RedisKeys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--backlog", type=int, default=0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="streamrec-phases-")
    s = fresh_settings(Settings(), tmp)
    ensure_topics(s.kafka)
    out = os.path.join(tmp, "phases.json")
    try:
        if args.backlog:
            produce_backlog(s, args.backlog, seed=0)
        env = {**settings_env(s), "STREAMREC_STREAM_ENGINE": "confluent"}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", out], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
        r = connect(s.redis.url, cluster=s.redis.cluster)
        EventProducer(s.kafka).produce(
            s.topic("watch"),
            json.dumps({"event_type": "watch", "event_id": "warm", "user_id": "warmup",
                        "item_id": "m0", "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())}).encode(),
            b"warmup",
        )  # fmt: skip
        deadline = time.time() + 120
        while not r.exists(keys.user_slot("warmup").user_stats("warmup")):
            if time.time() > deadline:
                raise SystemExit("worker did not start")
            time.sleep(0.05)
        probes: dict[str, float] = {}
        seen: list[tuple[float, float]] = []  # (produced, visible) per probe
        prod = threading.Thread(target=paced_produce, args=(s, args.rate, args.seconds, probes, 50))
        prod.start()
        sent: dict[str, float] = {}
        while prod.is_alive() or probes:
            pending = list(probes)
            if pending:
                pipe = r.pipeline(transaction=False)
                for u in pending:
                    pipe.exists(keys.user_slot(u).user_stats(u))
                now = time.time()
                for u, ok in zip(pending, pipe.execute(), strict=True):
                    if ok:
                        t = probes.pop(u)
                        sent[u] = t
                        seen.append((t, now))
            if not prod.is_alive() and time.time() > deadline + args.seconds + 60:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        recorded = json.loads(Path(out).read_text())
        rows, pauses = recorded["rows"], recorded["gc"]
        bare, floor = freshness_bare(s, args.rate, args.seconds)  # the same-run baselines
    finally:
        cleanup(s)
    lat = [b - a for a, b in seen]
    load = os.getloadavg()
    table = Table(
        title=f"freshness at {args.rate:,}/s, backlog {args.backlog:,}, load avg"
        f" {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    for col in ("measure", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col)
    for name, values in (
        ("worker: produce -> visible in Redis", lat),
        ("bare consumer, consume(1000, 0.1) loop", bare),
        ("bare consumer, per-message poll", floor),
    ):
        table.add_row(
            name, *(f"{v * 1000:.0f}" for v in (pct(values, 0.5), pct(values, 0.99), max(values)))
        )
    Console().print(table)
    t_first = seen[0][0] - 1 if seen else 0.0  # a second before the first probe
    live = [row for row in rows if row[0] >= t_first]
    sizes = sorted(row[1] for row in live)
    print(
        f"{len(live)} loop iterations while probing (batch events p50 {pct(sizes, 0.5)},"
        f" max {sizes[-1] if sizes else 0}); per phase: total s, p99 ms, max ms"
    )
    for i, name in enumerate(PHASES):
        took = sorted(row[2 + i] for row in live)
        print(f"  {name:10s} {sum(took):7.2f} {pct(took, 0.99) * 1000:8.1f} {took[-1] * 1000:8.1f}")
    for gen in (0, 1, 2):
        took = sorted(d for w, g, d in pauses if g == gen and w >= t_first)
        if took:
            print(
                f"  gc gen{gen}: {len(took)} collections while probing, {sum(took):.2f} s,"
                f" max {took[-1] * 1000:.1f} ms"
            )
    print(
        "slowest probes: the loop phases (ms, summed) of the iterations overlapping each wait;"
        " the longest iteration's phases over 10 ms; the worker's GC pauses meanwhile"
    )
    for a, b in sorted(seen, key=lambda x: x[0] - x[1])[:8]:
        # Iterations overlapping the probe's wait (started before it was visible, ended after
        # it was produced).
        during = [row for row in live if row[0] <= b and row[0] + sum(row[2:]) >= a]
        sums = {n: sum(row[2 + i] for row in during) * 1000 for i, n in enumerate(PHASES)}
        worst = max(during, key=lambda row: sum(row[2:]), default=None)
        top = ", ".join(f"{n} {v:.0f}" for n, v in sorted(sums.items(), key=lambda x: -x[1])[:4])
        longest = (
            ", ".join(
                f"{n} {worst[2 + i] * 1000:.0f}"
                for i, n in enumerate(PHASES)
                if worst[2 + i] > 0.01
            )
            if worst
            else ""
        )
        gc_ms = sum(d for w, _, d in pauses if a <= w <= b) * 1000
        print(
            f"  {(b - a) * 1000:6.0f} ms over {len(during)} iterations: {top}; longest: {longest}"
            f"; gc {gc_ms:.0f}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_timed_worker(sys.argv[2])
    else:
        main()
