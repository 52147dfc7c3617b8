"""Redis's cost per event of the stream worker's apply script (issue 20, the freshness tail)
on freshness-shaped batches: watch events of users seen for the first time ("new", as in
the first seconds of a ``bench/streams.py`` freshness run, where nearly every event is a new
user), then of the same users again ("repeat"), items cycling over 3,000.

Each tree's batches go through its own ``to_payload`` and ``RedisSink.apply`` into a private
``redis-server`` (AOF on, ``appendfsync everysec``, as the stack's) on a free port: the
figure is that server's CPU per event (``INFO cpu``), or with ``--instructions`` its
instructions per event counted by valgrind's callgrind (needs ``valgrind``; ~1 min per
tree), which the machine's load does not move. With ``--against DIR`` (a checkout of another
commit: ``git archive <rev> | tar -x -C DIR``) both trees run, interleaved.

Usage: ``python bench/apply_script_cost.py [--events 500] [--batches 6] [--repeats 3]
[--against DIR] [--instructions]``
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(tree: str, port: int, n: int, batches: int, window: int) -> dict[str, float]:
    """Runs in a subprocess with ``tree`` first on sys.path: per phase, the server's CPU
    seconds per event, and the payload bytes per event."""
    sys.path.insert(0, tree)
    from datetime import UTC, datetime

    import redis

    from schemas.redis_keys import DEDUPE_WINDOW, RedisKeys
    from streams.dedupe import dedupe_plan
    from streams.fast_decode import EventRecord
    from streams.features import Limits, TtlTracker, compute_deltas, to_payload
    from streams.redis_sink import PartitionRange, RedisSink

    r = redis.Redis(port=port)
    window = DEDUPE_WINDOW if window < 0 else window
    keys = RedisKeys("bench1a2b3c4d", 4)  # a prefix as long as bench/streams.py's
    sink = RedisSink(f"redis://127.0.0.1:{port}/0", keys)
    ttls, out, offset, i = TtlTracker(600), {}, 0, 0

    def cpu() -> float:
        info = r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    for phase in ("warm", "new", "repeat"):
        size = 0
        c0 = cpu()
        for _ in range(2 if phase == "warm" else batches):
            now = time.time()
            evs = []
            for _ in range(n):
                user = i if phase != "repeat" else i % (batches * n)
                evs.append(
                    EventRecord(
                        "watch", f"e{i}", f"u{user}", f"m{i % 3000}", datetime.now(UTC), now
                    )
                )
                i += 1
            refreshed: list[str] = []
            offsets = range(offset, offset + n)
            ids = [e.event_id for e in evs]
            payload = to_payload(
                compute_deltas(evs),
                keys.slot(0),
                Limits(),
                now,
                fresh=ttls,
                refreshed=refreshed,
                dedupe=[dedupe_plan(keys.slot(0), "watch", 0, ids, offsets, window)]
                if window
                else None,
            )
            size += len(payload)
            sink.apply([PartitionRange("watch", 0, offset, offset + n - 1)], payload)
            offset += n
            ttls.confirm(refreshed)
        if phase == "warm":
            r.execute_command("CONFIG", "RESETSTAT")  # callgrind counts from here (below)
            print("warm", flush=True)
            sys.stdin.readline()
        else:
            out[phase] = (cpu() - c0) / (batches * n)
            out[phase + "_bytes"] = size / (batches * n)
    sink.close()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(tree: str, args: argparse.Namespace) -> dict[str, float]:
    """One tree's batches against a fresh private server; callgrind counts only the
    measured phases (zeroed after the warm-up, dumped before the server stops)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="apply-cost-") as d:
        server = ["redis-server", "--port", str(port), "--save", "", "--dir", d]
        server += ["--appendonly", "yes", "--appendfsync", "everysec"]
        if args.instructions:
            server = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg", *server]
        proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import redis

            for _ in range(300):
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            child = subprocess.Popen(
                [
                    *(sys.executable, __file__, "--child", tree, str(port)),
                    *("--events", str(args.events), "--batches", str(args.batches)),
                    *("--dedupe-window", str(args.dedupe_window)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdin is not None and child.stdout is not None
            child.stdout.readline()  # warmed up
            if args.instructions:
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
            child.stdin.write("\n")
            child.stdin.flush()
            res = json.loads(child.stdout.readline())
            child.wait()
            if args.instructions:
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
                res["instructions"] = _total(Path(d) / "cg.1") / (2 * args.batches * args.events)
        finally:
            proc.terminate()
            proc.wait(30)
    return res


def _total(path: Path) -> float:
    """The dump's total instruction count (the ``summary:`` / ``totals:`` line)."""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return float(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=500, help="events per batch (one call)")
    ap.add_argument("--batches", type=int, default=6, help="batches per phase")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dedupe-window", type=int, default=-1, help="event-id dedupe (-1: the default; 0: off)"
    )
    ap.add_argument("--against", help="another tree to run interleaved")
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        tree, port = args.child[0], int(args.child[1])
        print(json.dumps(_child(tree, port, args.events, args.batches, args.dedupe_window)))
        return
    trees = {"this tree": str(ROOT)}
    if args.against:
        trees["against"] = str(Path(args.against).resolve())
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for _ in range(1 if args.instructions else args.repeats):
        for name, tree in trees.items():
            runs[name].append(_run(tree, args))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(
        f"Redis per event, {args.batches} x {args.events}-event batches a phase"
        f" (median of {len(runs['this tree'])}; load {load})"
    )
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        line = f"{name:10} payload {med['new_bytes']:.0f} / {med['repeat_bytes']:.0f} bytes"
        if "instructions" in med:  # the CPU under valgrind means nothing
            line += f", {med['instructions']:,.0f} instructions (new and repeat)"
        else:
            line += f", CPU new {med['new'] * 1e6:.1f} us, repeat {med['repeat'] * 1e6:.1f} us"
        print(line)


if __name__ == "__main__":
    main()
