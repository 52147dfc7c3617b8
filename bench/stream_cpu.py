"""CPU time per event of the stream worker's Python, phase by phase, on fixed batches
(issue 20): what the consumer thread does with a micro-batch (decode + key check; prepare
the Redis call: id dedupe, deltas, payload) and what the flush threads do with it (the
Arrow table of a Parquet file). No services: the phases are pure.

``process_time`` per phase, median of ``--repeats``, in µs per event; with ``--against
DIR`` (a checkout of another commit, e.g. ``git archive <rev> | tar -x -C DIR``) the same
batches run through that tree's code too, interleaved run by run, so load hits both alike.

``--instructions``: instructions per event of each phase instead, counted by valgrind's
callgrind (needs ``valgrind``; ~2 min per workload and tree at 4,000 events), which the
machine's load does not move.

Usage: ``python bench/stream_cpu.py [--events 40000] [--repeats 5] [--against DIR]
[--instructions]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("decode", "prepare", "table")
PARTITIONS = 4


def _batches(workload: str, n: int) -> list[tuple[str, int, list]]:
    """(event type, partition, raw records) per topic-partition of one batch of ``n``
    events: the sessions workload of bench/streams.py, its freshness load (``fresh``: watch
    events of distinct users, as the paced producer's), or the MovieLens-100K replay's first
    ``n`` events (the cached dataset; wire bytes as ``streamrec replay`` sends them)."""
    import random
    import time
    from datetime import UTC, datetime

    import orjson

    from core.config import Settings
    from ingest.movielens import load_movielens
    from ingest.replay import iter_payloads

    out: dict[tuple[str, int], list] = {}

    def add(etype: str, key: bytes, value: bytes) -> None:
        p = zlib.crc32(key) % PARTITIONS  # stable across processes, unlike hash()
        recs = out.setdefault((etype, p), [])
        recs.append((len(recs), key, value, 1.7e12))

    if workload == "sessions":  # as bench._streams_load.produce_backlog
        rng = random.Random(1)
        t0, i = time.time() - n * 0.01, 0
        while i < n:
            user = f"u{rng.randrange(20_000)}"
            item = f"m{int(rng.paretovariate(1.2)) % 3000}"
            for _ in range(rng.randint(1, 20)):
                doc = {"event_id": f"e{i}", "user_id": user, "item_id": item,
                       "ts": datetime.fromtimestamp(t0 + i * 0.01, UTC).isoformat()}  # fmt: skip
                if rng.random() < 0.75:
                    add("watch", user.encode(), orjson.dumps(
                        {"event_type": "watch", **doc, "minute": i % 120}))  # fmt: skip
                else:
                    add("rate", user.encode(), orjson.dumps(
                        {"event_type": "rate", **doc, "rating": rng.randrange(1, 6)}))  # fmt: skip
                i += 1
    elif workload == "fresh":  # as bench._streams_load.paced_produce: 20,000 users in turn
        now = time.time()
        for i in range(n):
            user = f"u{i % 20_000}"
            add("watch", user.encode(), orjson.dumps(
                {"event_type": "watch", "event_id": f"f{i}", "user_id": user,
                 "item_id": f"m{i % 3000}",
                 "ts": datetime.fromtimestamp(now + i * 2e-4, UTC).isoformat()}))  # fmt: skip
    else:
        ml = load_movielens(Settings().cache_path)
        for j, (etype, key, value) in enumerate(iter_payloads(ml)):
            if j >= n:
                break
            add(etype, key, value)
    return [(etype, p, recs) for (etype, p), recs in sorted(out.items())]


def measure(
    workload: str, n: int, repeats: int, mark: Callable[[], object] = lambda: None
) -> dict[str, list[float]]:
    """µs of CPU per event of each phase, one figure per repeat (this tree's code);
    ``mark`` is called before and after each phase (the instruction counts' dump points)."""
    import gc
    import time

    from core.config import Settings
    from schemas.redis_keys import RedisKeys
    from streams.decode import decode_batch
    from streams.features import Limits, TtlTracker
    from streams.keys import check_keys
    from streams.metrics import StreamMetrics
    from streams.redis_apply import RedisApplier, RedisWork
    from streams.snapshots import to_table
    from streams.state import PartitionState

    batches = _batches(workload, n)
    total = sum(len(recs) for _, _, recs in batches)
    s = Settings()
    lim = Limits.from_settings(s.stream)
    keys = RedisKeys("bench", PARTITIONS)
    # As the worker (streams.parts.freeze_heap): what is alive now is frozen, and the
    # collector runs every 50,000 allocations.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    out: dict[str, list[float]] = {p: [] for p in PHASES}
    clock = time.process_time
    for _ in range(repeats):
        applier = RedisApplier(
            redis=None,  # type: ignore[arg-type]  # _prepare only: no call is sent
            keys=keys, limits=lim, genres={}, ttls=TtlTracker(60.0),
            metrics=StreamMetrics(), retry=cast(Any, lambda fn, sink: fn()),
            dedupe_window=s.stream.dedupe_window,
        )  # fmt: skip
        mark()
        t0 = clock()
        work, decoded = [], []
        for etype, p, recs in batches:
            st = PartitionState(f"t.{etype}", p, etype, committed=-1, next_offset=0, flushed_to=0)
            dec = decode_batch(recs, event_type=etype, topic=st.topic, partition=p, now=0.0)
            check_keys(recs, dec, topic=st.topic, partition=p, now=0.0)
            decoded.append((etype, p, dec))
            work.append(RedisWork(st, 0, recs[-1][0], dec.events, dec.offsets, dec.produced_ms))
        t1 = clock()
        mark()
        groups: dict[int, list] = {}
        for w in applier._dedupe(work):
            groups.setdefault(w.st.partition, []).append(w)
        for g in groups.values():
            applier._prepare(g)
        t2 = clock()
        mark()
        for etype, p, dec in decoded:
            to_table(etype, dec.events, dec.offsets, p)
        t3 = clock()
        mark()
        for name, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            out[name].append(dt / total * 1e6)
        gc.collect()
    return out


def instructions(workload: str, n: int, root: Path) -> dict[str, float]:
    """Instructions per event of each phase (callgrind, the second of two repeats: the
    first warms caches up), for the tree at ``root``. Load does not move these counts.

    The child marks the phases by calling ``os.getppid``, before which callgrind dumps its
    counters (``--dump-before``): dump k holds what ran since dump k-1."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-before=os_getppid",
             f"--callgrind-out-file={tmp}/cg.out", sys.executable,
             str(Path(__file__).resolve()), "--child-instructions", workload, str(n)],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        counts = []
        for i in range(1, 9):  # 2 repeats x 4 marks
            text = Path(f"{tmp}/cg.out.{i}").read_text()
            counts.append(int(next(ln for ln in text.splitlines() if ln.startswith("summary:"))
                              .split()[1]))  # fmt: skip
    # The second repeat: marks 5..8; dump 6 = decode, 7 = prepare, 8 = table.
    return {p: counts[5 + j] / n for j, p in enumerate(PHASES)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workloads", default="sessions,movielens")
    ap.add_argument("--against", help="another tree of the project, measured alike")
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per event by valgrind's callgrind instead of CPU time",
    )
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    trees = {"this tree": ROOT}
    if args.against:
        trees = {f"{args.against}": Path(args.against).resolve(), **trees}
    if args.instructions:
        _print_instructions(args, trees)
        return
    runs: dict[tuple[str, str], dict[str, list[float]]] = {}
    for workload in args.workloads.split(","):
        for _ in range(args.repeats):  # one repeat per process, trees interleaved
            for name, root in trees.items():
                got = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", workload,
                     str(args.events)],
                    cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                acc = runs.setdefault((workload, name), {p: [] for p in PHASES})
                for p, v in json.loads(got.stdout.splitlines()[-1]).items():
                    acc[p].extend(v)
    load = os.getloadavg()
    table = Table(
        title=f"stream worker CPU µs/event, median of {args.repeats} (process_time), "
        f"{args.events:,} events a batch, load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    for col in ("workload", "code", *PHASES, "total"):
        table.add_column(col)
    for (workload, name), acc in runs.items():
        med = {p: statistics.median(v) for p, v in acc.items()}
        table.add_row(
            workload, name, *(f"{med[p]:.2f}" for p in PHASES), f"{sum(med.values()):.2f}"
        )
    Console().print(table)


def _print_instructions(args: argparse.Namespace, trees: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"stream worker instructions per event (callgrind), {args.events:,} events a batch"
    )
    for col in ("workload", "code", *PHASES, "total"):
        table.add_column(col)
    for workload in args.workloads.split(","):
        for name, root in trees.items():
            got = instructions(workload, args.events, root)
            table.add_row(
                workload, name, *(f"{got[p]:,.0f}" for p in PHASES), f"{sum(got.values()):,.0f}"
            )
    Console().print(table)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, os.getcwd())
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), 3)))
    elif len(sys.argv) == 4 and sys.argv[1] == "--child-instructions":
        sys.path.insert(0, os.getcwd())
        measure(sys.argv[2], int(sys.argv[3]), 2, mark=os.getppid)
    else:
        main()
