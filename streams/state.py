"""Per-partition and per-worker bookkeeping shared by the processor and the flusher."""

from __future__ import annotations

from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass
class PartitionState:
    topic: str
    partition: int
    event_type: str
    committed: int  # next offset to read after a restart (-1: nothing committed yet)
    next_offset: int = -1  # next offset expected from Kafka (-1: not known yet)
    redis_wm: int = -1  # Redis watermark: highest offset whose features are applied
    # Offsets below this are in snapshot files written or being written (the next commit).
    flushed_to: int = -1
    # Rows waiting for the next flush job: (events, offsets), in offset order. The table is
    # built once per file by the flush job, off the consumer thread.
    buffer: tuple[list, list[int]] = field(default_factory=lambda: ([], []))
    buffered: int = 0

    @property
    def pending(self) -> bool:
        """Processed offsets not committed yet."""
        return self.next_offset > self.committed >= -1 and self.next_offset > 0

    @property
    def unflushed(self) -> bool:
        """Processed offsets neither in a snapshot file nor in the write in flight."""
        return self.pending and self.next_offset > self.flushed_to


@dataclass
class Totals:
    processed: int = 0
    dead_lettered: int = 0
    files_written: int = 0
    duplicates: int = 0
