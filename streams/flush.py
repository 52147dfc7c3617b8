"""The Parquet cadence off the consumer thread: a flush job (the buffers of every partition
with uncommitted offsets, cut at a point) is written on a thread of its own while the loop
keeps consuming and updating Redis. One job is in flight at a time, so files and commits
stay in offset order; the job's offsets are committed, on the consumer thread, only once
all its files are durable.

Writing Parquet (Arrow encode, compression, fsync) releases the GIL, so it overlaps with
the loop; done inline it paused the loop for 60-300 ms per flush on this machine. A job
writes one file per partition (files are dated by arrival, see :mod:`schemas.snapshots`),
``writers`` threads at once. Each file is fsynced before it is renamed into place
(``put_deferred``); the directory entries are fsynced once per directory for the whole job
(``sync``), after the last file and before the job counts as done, so before its commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date

from streams.snapshots import SnapshotWriter, arrival_day, to_table
from streams.state import PartitionState


@dataclass
class FlushJob:
    # Each partition with the offset to commit once the files are durable.
    parts: list[tuple[PartitionState, int]]
    # (event type, partition, (events, offsets)) per file to write.
    files: list[tuple[str, int, tuple[list, list[int]]]] = field(default_factory=list)
    # The files' arrival_date: the UTC day the job was cut.
    arrival: date = field(default_factory=arrival_day)
    events: int = 0
    # Redis batches submitted when the job was cut: its offsets are in those (the
    # Processor commits them once they are applied and joined).
    redis_seq: int = 0
    started: float = field(default_factory=time.perf_counter)


def cut_job(states: list[PartitionState]) -> FlushJob:
    """Take the buffers of ``states`` into a job and mark their offsets as being flushed."""
    job = FlushJob(parts=[])
    for st in states:
        if st.buffered:
            job.files.append((st.event_type, st.partition, st.buffer))
        job.parts.append((st, st.next_offset))
        job.events += st.buffered
        st.flushed_to = st.next_offset
        st.buffer = ([], [])
        st.buffered = 0
    return job


class BackgroundFlusher:
    def __init__(
        self,
        writer: SnapshotWriter,
        retry: Callable[[Callable[[], object], str], object],
        writers: int = 4,
    ) -> None:
        self.writer = writer
        self._retry = retry
        self.writers = writers
        self._pool: ThreadPoolExecutor | None = None
        self._files: ThreadPoolExecutor | None = None
        self.job: FlushJob | None = None
        self._future: Future[int] | None = None

    @property
    def busy(self) -> bool:
        return self._future is not None

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def start(self, job: FlushJob) -> None:
        assert self._future is None, "one flush in flight at a time"
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="streams-parquet")
            self._files = ThreadPoolExecutor(self.writers, thread_name_prefix="streams-file")
        self.job = job
        self._future = self._pool.submit(self._write, job)

    def _write(self, job: FlushJob) -> int:
        assert self._files is not None
        futures = [self._files.submit(self._write_file, job.arrival, *f) for f in job.files]
        # Every write finished (failed ones too) before the job counts as done, so no write
        # of this job is still running when the next one starts.
        wait(futures)
        keys = [f.result() for f in futures]  # raises the first failure (e.g. Stopped)
        # The files' directory entries, made durable once for the whole job (one fsync per
        # directory, not per file) and before the job counts as done, i.e. before its commit.
        self._retry(lambda: self.writer.sync(keys), "storage")
        return len(job.files)

    def _write_file(
        self, arrival: date, etype: str, partition: int, rows: tuple[list, list]
    ) -> str:
        table = to_table(etype, rows[0], rows[1], partition)  # one table per file
        write = self.writer.write
        return self._retry(  # type: ignore[return-value]
            lambda: write(etype, arrival, partition, [table], deferred=True), "storage"
        )

    def wait(self) -> FlushJob:
        """Block until the job in flight is durable and return it (raises what the write
        raised, e.g. ``Stopped`` when the worker stops while storage is down)."""
        assert self._future is not None and self.job is not None
        future, job = self._future, self.job
        try:
            future.result()
        finally:
            self._future, self.job = None, None
        return job

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._files is not None:
            self._files.shutdown(wait=True)
            self._files = None
