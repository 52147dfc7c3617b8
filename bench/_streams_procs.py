"""Stream workers in processes of their own for ``bench/streams.py``: one or several
workers sharing a consumer group over the same backlog, their combined events/s, and the
environment that gives a ``streamrec`` subprocess a benchmark's settings (single node or
cluster).

Run as ``python -m bench._streams_procs`` (settings from ``STREAMREC_*``): one worker until
caught up, then one JSON line: events processed, wall-clock time of the first one and of the
end.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from core.config import Settings, flat_names

ROOT = Path(__file__).resolve().parent.parent

# What a benchmark changes in its Settings; a subprocess gets them as STREAMREC_* variables.
FIELDS = (
    "topic_prefix",
    "redis_key_prefix",
    "storage_url",
    "stream_app_id",
    "stream_engine",
    "kafka_bootstrap",
    "topic_replication_factor",
    "topic_min_insync_replicas",
    "redis_url",
    "redis_cluster",
    "redis_min_replicas_ack",
)


def settings_env(s: Settings) -> dict[str, str]:
    """``os.environ`` plus ``s``'s benchmark fields, so a subprocess reads the same stack."""
    env = dict(os.environ)
    for name in FIELDS:
        section, field = flat_names()[name]
        value = getattr(getattr(s, section), field)
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"STREAMREC_{name.upper()}"] = text
    return env


def workers_run(
    s: Settings, n: int, workers: int, engine: str = "confluent"
) -> tuple[float, float]:
    """(combined events/s of ``workers`` processes sharing ``s``'s group over a backlog of
    ``n`` events: the backlog over first event processed (by any) to last worker caught up;
    CPU microseconds per event summed over the workers). On a
    machine with fewer free cores than workers the rate cannot scale, but the CPU per event
    says whether the work divides without overhead (equal) or costs more when shared."""
    env = {**settings_env(s), "STREAMREC_STREAM_ENGINE": engine, "STREAMREC_LOG_LEVEL": "WARNING"}
    # Started together, they join in the group's first rebalance (the broker delays it).
    # stderr to files: a full pipe would stall a worker that is not being read yet.
    outs = []
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(workers)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench._streams_procs"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            for log in logs
        ]
        try:
            for proc, log in zip(procs, logs, strict=True):
                out, _ = proc.communicate(timeout=900)
                if proc.returncode != 0:
                    log.seek(0)
                    raise RuntimeError(f"bench worker failed: {log.read().decode()[-2000:]}")
                outs.append(json.loads(out.decode().strip().splitlines()[-1]))
        finally:
            for proc in procs:  # a failed run leaves no worker behind
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    processed = sum(o["processed"] for o in outs)
    if processed < n:
        raise RuntimeError(f"workers processed {processed} of {n} events")
    started = min(o["t_first"] for o in outs if o["processed"])
    # The backlog over the time: events read twice after a rebalance count once.
    rate = n / (max(o["t_end"] for o in outs) - started)
    return rate, sum(o["cpu_s"] for o in outs) / n * 1e6


def _one_worker() -> None:
    from streams.app import create_app

    worker = create_app(Settings(), until_caught_up=True)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    t_first = cpu_first = 0.0
    while thread.is_alive():
        if not t_first and worker.totals.processed:
            t_first, cpu_first = time.time(), time.process_time()
        time.sleep(0.002)
    t_end, cpu = time.time(), time.process_time()
    processed = worker.totals.processed
    sys.stdout.write(
        json.dumps(
            {
                "processed": processed,
                "t_first": t_first,
                "t_end": t_end,
                "cpu_s": cpu - cpu_first if t_first else 0.0,  # every thread of the worker
            }
        )
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    _one_worker()
