"""A dev-only probe of where slow requests spend their time (``STREAMREC_SERVE_PROBE_PATH``;
off by default, and then none of this runs).

When on, the worker records:

* the event loop's lag: a task sleeps 1 ms over and over and keeps every overshoot past
  ``LAG_MS`` with its start time (a blocked loop, or a loop thread waiting for the GIL);
* each ``/recommend`` request's phases as ``time.perf_counter()`` marks (route entered,
  Redis read, model resolved, model call queued / batch started / batch finished on its
  thread / answer back on the loop, logged, response sent), kept for requests slower than
  ``slow_ms`` and counted for all;
* intervals of the background work that shares the worker with requests: item-feature
  sweeps, alias polls, producer polls, garbage collections and every batch of model calls
  (with its size and whether it ran on the loop).

Everything is kept in bounded memory and written as JSON lines to ``<path>.<pid>`` when the
worker stops (``bench/serving.py --probe`` reads and summarises it; perf_counter is
CLOCK_MONOTONIC, so marks line up with the load generator's). Not for production: the marks
cost a few µs a request."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from serving import schedstat

LAG_MS = 2.0  # overshoots of the 1 ms sleep kept (uvloop's timers tick in whole ms)
_KEEP = 20_000  # records of each kind kept (the newest)

Marks = dict[str, float]


class Probe:
    def __init__(self, path: str, slow_ms: float = 10.0) -> None:
        self.path = Path(f"{path}.{os.getpid()}")
        self.slow_s = slow_ms / 1000
        # (start, stall s, loop thread's CPU s, its run-queue wait s) of each stall
        self.lags: deque[tuple[float, float, float, float]] = deque(maxlen=_KEEP)
        self.slow: deque[Marks] = deque(maxlen=_KEEP)
        self.intervals: deque[tuple[str, float, float, int, float, float]] = deque(maxlen=_KEEP)
        self.requests = 0
        # Every request's (route time, route-to-sent seconds).
        self.latencies: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None
        self._gc_start = 0.0

    # --- requests -----------------------------------------------------------------------
    @staticmethod
    def mark(marks: Marks | None, phase: str) -> None:
        if marks is not None:
            marks[phase] = time.perf_counter()

    def finish(self, marks: Marks) -> None:
        """A request's last mark: kept when it was slow."""
        marks["sent"] = time.perf_counter()
        self.requests += 1
        took = marks["sent"] - marks["route"]
        if len(self.latencies) < 1_000_000:
            self.latencies.append((marks["route"], took))
        if took > self.slow_s:
            self.slow.append(marks)

    # --- background work ----------------------------------------------------------------
    def interval(
        self, name: str, start: float, size: int = 0, cpu_s: float = 0.0, runq_s: float = 0.0
    ) -> None:
        """``name`` ran from ``start`` to now (``cpu_s``: its thread's CPU meanwhile,
        ``runq_s``: its wait for a core; the rest of the wall time it slept: the GIL)."""
        self.intervals.append((name, start, time.perf_counter(), size, cpu_s, runq_s))

    @staticmethod
    def run_queue() -> float:
        """Seconds the calling thread has waited for a core so far (schedstat: updated at
        context switches, so coarse over short spans; its CPU: ``time.thread_time``)."""
        fd = schedstat.open_thread()
        try:
            return schedstat.read(fd)[1]
        finally:
            if fd >= 0:
                os.close(fd)

    def timed_async(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.interval(name, start)

        return wrapper

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.interval(name, start)

        return wrapper

    # --- the loop's lag -----------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch_lag())
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Each garbage collection as an interval ``gc<generation>`` (size: objects freed)."""
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.interval(f"gc{info['generation']}", self._gc_start, info.get("collected", 0))

    async def _watch_lag(self) -> None:
        """Each stall is split by the loop thread's own counters: CPU it ran (Python on the
        loop), time it waited runnable for a core (the machine is busy: schedstat's run
        delay) and the rest, off-CPU and not runnable: waiting for the GIL or a blocking
        call."""
        limit = LAG_MS / 1000
        fd = schedstat.open_thread()  # the loop's thread: this task runs on it
        try:
            cpu, wait = schedstat.read(fd)
            while True:
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                over = time.perf_counter() - start - 0.001
                cpu2, wait2 = schedstat.read(fd)
                if over > limit:
                    self.lags.append((start, over, cpu2 - cpu, wait2 - wait))
                cpu, wait = cpu2, wait2
        finally:
            if fd >= 0:
                os.close(fd)

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.dump()

    def dump(self) -> None:
        summary = {"kind": "summary", "requests": self.requests, "slow_ms": self.slow_s * 1000}
        with self.path.open("w") as out:
            out.write(json.dumps(summary) + "\n")
            out.write(json.dumps({"kind": "latencies", "rows": self.latencies}) + "\n")
            for start, over, cpu, wait in self.lags:
                row = {"kind": "lag", "t": start, "ms": over * 1000}
                row.update(cpu_ms=cpu * 1000, runq_ms=wait * 1000)
                out.write(json.dumps(row) + "\n")
            for name, start, end, size, cpu_s, runq_s in self.intervals:
                row = {"kind": "interval", "name": name, "t": start, "end": end, "size": size}
                row.update(cpu_ms=cpu_s * 1000, runq_ms=runq_s * 1000)
                out.write(json.dumps(row) + "\n")
            for marks in self.slow:
                out.write(json.dumps({"kind": "slow", "marks": marks}) + "\n")
