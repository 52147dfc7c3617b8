"""A thread's scheduler counters from Linux's ``/proc/thread-self/schedstat``: the CPU it ran
and the time it waited runnable for a core. The batcher uses the wait so a busy host does not
count against a model; the dev probe (``serving.probe``) splits event-loop stalls by both.
Where the file does not exist (not Linux) the counters read as zero."""

from __future__ import annotations

import os


def open_thread() -> int:
    """A descriptor of the calling thread's schedstat, -1 where there is none."""
    try:
        return os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return -1


def read(fd: int) -> tuple[float, float]:
    """(CPU s, run-queue wait s) so far of the thread of ``fd`` (:func:`open_thread`)."""
    if fd < 0:
        return 0.0, 0.0
    try:
        ran, waited, _ = os.pread(fd, 100, 0).split()
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0
