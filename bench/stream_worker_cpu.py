"""CPU per event of the whole stream worker and of its Redis server, draining one backlog
(issue 20), with ``--against DIR`` the same for another tree of the project, runs interleaved.

Wall-clock rates mean little on a shared, loaded machine; CPU seconds per event do not scale
with the load (much), so this is how to decide a change of the worker. Each run: a backlog
(``sessions`` as ``bench/streams.py``, or the MovieLens-100K replay) on throwaway topics; then
each tree's worker in a process of its own (``python -m bench._streams_procs`` in that tree:
until caught up), in a consumer group and Redis key space of its own, on a private
``redis-server`` (free port, temp dir: others' keys and scans are not in its CPU). Reported,
medians of ``--runs``: the worker process's CPU (every thread, from its first event to caught
up) and the Redis server's CPU (``INFO cpu``), µs per event, and events/s (wall; with the
load average beside it).

Usage: ``python bench/stream_worker_cpu.py [--events 200000] [--runs 3]
[--workloads sessions,movielens] [--against DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._streams_load import fresh_settings, produce_backlog, produce_movielens  # noqa: E402
from bench._streams_procs import settings_env  # noqa: E402
from core.config import Settings  # noqa: E402
from core.kafka import delete_topics, ensure_topics  # noqa: E402
from core.redis import connect  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_server(tmp: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", tmp, "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            connect(url, cluster=False).ping()
            return proc, url
        except Exception:  # not up yet
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the private redis-server did not start")


def _redis_cpu(url: str) -> float:
    info = connect(url, cluster=False).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _worker(s: Settings, root: Path, tag: str) -> dict:
    """One worker of the tree at ``root`` over ``s``'s backlog, in a group and key space
    of its own; its JSON line (processed, t_first, t_end, cpu_s)."""
    env = {
        **settings_env(s),
        "STREAMREC_STREAM_APP_ID": f"cpu-{tag}",
        "STREAMREC_REDIS_KEY_PREFIX": f"{s.redis.key_prefix}{tag}",
        "STREAMREC_STORAGE_URL": f"{s.storage.url}-{tag}",
        "STREAMREC_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(root),
    }
    got = subprocess.run(
        [sys.executable, "-m", "bench._streams_procs"],
        cwd=root, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if got.returncode != 0:
        raise SystemExit(f"worker of {root} failed: {got.stderr[-2000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workloads", default="sessions,movielens")
    ap.add_argument("--against", help="another tree of the project, measured alike")
    args = ap.parse_args()
    trees = {"this tree": ROOT}
    if args.against:
        trees = {args.against: Path(args.against).resolve(), **trees}
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis, url = _redis_server(tmp)
        try:
            base = Settings().with_sections(redis={"url": url, "cluster": False})
            for workload in args.workloads.split(","):
                for run in range(args.runs):
                    s = fresh_settings(base, tmp)
                    ensure_topics(s.kafka)
                    try:
                        if workload == "movielens":
                            n = produce_movielens(s)
                        else:
                            n = args.events
                            produce_backlog(s, n, seed=run)
                        order = list(trees.items())
                        if run % 2:
                            order.reverse()  # interleaved: neither tree always goes first
                        for i, (name, root) in enumerate(order):
                            cpu0 = _redis_cpu(url)
                            out = _worker(s, root, f"{run}{i}")
                            redis_s = _redis_cpu(url) - cpu0
                            acc = rows.setdefault(
                                (workload, name), {"worker": [], "redis": [], "rate": []}
                            )
                            acc["worker"].append(out["cpu_s"] / out["processed"] * 1e6)
                            acc["redis"].append(redis_s / out["processed"] * 1e6)
                            acc["rate"].append(
                                out["processed"] / max(1e-9, out["t_end"] - out["t_first"])
                            )
                        connect(url, cluster=False).flushall()
                    finally:
                        delete_topics(s.kafka)
        finally:
            redis.kill()
            redis.wait()
    load = os.getloadavg()
    table = Table(
        title=f"stream worker CPU per event, whole process, medians of {args.runs}; "
        f"load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    for col in ("workload", "code", "worker µs/event", "redis µs/event", "events/s (wall)"):
        table.add_column(col)
    for (workload, name), acc in rows.items():
        med = {k: statistics.median(v) for k, v in acc.items()}
        runs = ", ".join(f"{v:.1f}" for v in acc["worker"])
        table.add_row(
            workload,
            name,
            f"{med['worker']:.1f} ({runs})",
            f"{med['redis']:.1f}",
            f"{med['rate']:,.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
