"""CPU per request of every process on the machine during the serving benchmark's max
phase (issue 14): with 2 workers on 2 cores, throughput is 2 cores / (our server's CPU +
everyone else's CPU per request), so the Redis server, the Kafka broker receiving our
request logs and wrk count as much as our own work.

Read from ``/proc/<pid>/stat`` (utime + stime) of every process before and after each wrk
run, plus the driver's finished children (wrk: ``getrusage(RUSAGE_CHILDREN)``) and the
machine's idle time (``/proc/stat``). Processes are grouped: the server under test (its
tree), the Redis server and the Kafka broker the benchmark uses (the processes listening on
their ports; other people's private ones are "everything else"), wrk, this driver, the
benchmark's other (idle) servers, and everything else (other people's jobs).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench._serving_live import _children

_TICK = os.sysconf("SC_CLK_TCK")
_CORES = os.cpu_count() or 1
GROUPS = ("server", "redis-server", "kafka broker", "wrk", "bench driver", "other servers",
          "everything else", "exited meanwhile", "idle")  # fmt: skip


def _tree(pid: int) -> set[int]:
    procs = [pid]
    for p in procs:
        procs += _children(p)
    return set(procs)


def listener(port: int) -> int | None:
    """The pid listening on TCP ``port`` (``ss``, iproute2), or None."""
    out = subprocess.run(["ss", "-H", "-ltnp", f"sport = :{port}"], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    found = re.search(r"pid=(\d+)", out)
    return int(found.group(1)) if found else None


def _procs() -> dict[int, float]:
    """pid -> CPU seconds so far."""
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def _idle_s() -> float:
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return (int(cpu[4]) + int(cpu[5])) / _TICK  # idle + iowait


class CpuByProcess:
    """``start()`` before a wrk run, ``stop(kind, pid, requests, others)`` after it; ``ms``:
    kind -> group -> CPU ms per request answered, summed over the kind's runs."""

    def __init__(self) -> None:
        from urllib.parse import urlsplit

        from core.config import Settings

        # The single-node stack's (a cluster topology's nodes count as "everything else").
        settings = Settings()
        redis_port = urlsplit(settings.redis.url).port or 6379
        kafka_port = int(settings.kafka.bootstrap.split(",")[0].rsplit(":", 1)[1])
        self.named = {listener(redis_port): "redis-server", listener(kafka_port): "kafka broker"}
        self.cpu: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.requests: dict[str, int] = defaultdict(int)
        self._before: tuple = ()
        self._seen: dict[str, float] = {}
        # kind -> pid -> CPU s of each process of the server's tree: how evenly the kernel
        # spread wrk's connections over the workers.
        self.per_pid: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))

    def start(self) -> None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        self._before = (_procs(), children.ru_utime + children.ru_stime,
                        me.ru_utime + me.ru_stime, _idle_s(), time.monotonic())  # fmt: skip

    def stop(self, kind: str, pid: int, requests: int, others: list[int]) -> None:
        procs0, wrk0, me0, idle0, t0 = self._before
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        procs1 = _procs()
        ours = _tree(pid)
        servers = set().union(*(_tree(p) for p in others)) if others else set()
        out = self.cpu[kind]
        for p, cpu in procs1.items():
            if p == os.getpid():  # counted by getrusage below
                continue
            # A process born during the run: all of its CPU is the run's.
            used = cpu - procs0[p] if p in procs0 else cpu
            group = (
                "server" if p in ours
                else "other servers" if p in servers
                else self.named.get(p, "everything else")
            )  # fmt: skip
            out[group] += used
            if p in ours:
                self.per_pid[kind][p] += used
        out["wrk"] += children.ru_utime + children.ru_stime - wrk0
        out["bench driver"] += me.ru_utime + me.ru_stime - me0
        idle = _idle_s() - idle0
        # The cores' time not seen in a live process nor idle: processes that ended during
        # the run (other than wrk), and rounding to clock ticks.
        seen = sum(v for g, v in out.items()) - self._seen.get(kind, 0.0) + idle
        out["exited meanwhile"] += max(0.0, (time.monotonic() - t0) * _CORES - seen)
        out["idle"] += idle
        self._seen[kind] = sum(out.values())
        self.requests[kind] += requests

    def ms(self) -> dict[str, dict[str, Any]]:
        """kind -> group -> CPU ms per request; ``split``: the CPU shares of the server's
        processes over 5% of its tree (the workers), largest first."""
        out: dict[str, dict[str, Any]] = {}
        for kind, cpu in self.cpu.items():
            out[kind] = {g: cpu.get(g, 0.0) / max(self.requests[kind], 1) * 1000 for g in GROUPS}
            total = sum(self.per_pid[kind].values()) or 1.0
            shares = sorted((v / total for v in self.per_pid[kind].values()), reverse=True)
            out[kind]["split"] = [round(x, 3) for x in shares if x > 0.05]
        return out


def print_table(console, rows: dict[str, dict[str, Any]], labels: dict[str, str], load: str):
    """``rows``: kind -> :meth:`CpuByProcess.ms` of the kind."""
    from rich.table import Table

    table = Table(title=f"CPU ms per request by process, max phase (load avg {load})")
    table.add_column("endpoint")
    for g in (*GROUPS, "all but idle", "server split"):
        table.add_column(g, justify="right")
    for kind, row in rows.items():
        busy = sum(row[g] for g in GROUPS if g != "idle")
        split = "/".join(f"{x:.0%}" for x in row["split"])
        table.add_row(labels[kind], *(f"{row[g]:.3f}" for g in GROUPS), f"{busy:.3f}", split)
    console.print(table)
