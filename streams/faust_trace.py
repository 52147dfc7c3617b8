"""Dev-only timeline of the Faust engine's batches (issue 15): one log line per batch with
where its time went, from the fetch to the end of ``Processor.process``. Off unless the
logger ``streams.faust_trace`` is at DEBUG (``STREAMREC_LOG_LEVEL=DEBUG``); when off, the
engine carries ``None`` instead of a trace and pays one attribute test per batch.

A line reads (times in ms)::

    n=812 cap=1000 fetches=3 age@fill=41/22 fill=20 put=0 queue=0 exec=1 proc=6 age@done=69
    paused=0 flow=1 chan=0 parts=watch0:203/41 watch1:198/40 watch2:211/41 watch3:200/39

``age@fill`` is the age of the oldest / newest record (now minus its Kafka timestamp, the
producer's clock: same host) when the fill returned; ``fill`` from the fill's first records
to its return; ``put`` waiting for room on the agent's channel; ``queue`` on the channel
until the agent took it; ``exec`` until the Processor's thread started on it; ``proc`` in
``Processor.process``; ``age@done`` of the oldest record after it; ``paused`` partitions
paused by Faust or aiokafka at the fill; ``chan`` batches on the channel at the put;
``parts`` per partition ``topic-suffix[p]:records/age of its oldest at the fill``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("streams.faust_trace")


def enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


@dataclass
class BatchTrace:
    cap: int = 0
    fetches: int = 0
    first: float = 0.0  # monotonic: the fill's first records arrived
    filled: float = 0.0  # the fill returned
    filled_wall: float = 0.0
    oldest_ms: int = 0  # Kafka timestamps of the batch's oldest and newest records
    newest_ms: int = 0
    paused: int = 0
    flow: bool = True
    chan: int = 0
    sent: float = 0.0  # the put onto the channel returned
    received: float = 0.0  # the agent took it
    started: float = 0.0  # the Processor's thread started on it
    # partition -> [records, oldest timestamp] of the batch
    parts: dict[str, list[int]] = field(default_factory=dict)

    def note_records(self, tp: str, n: int, ts_first: int | None, ts_last: int | None) -> None:
        if ts_first is not None and (not self.oldest_ms or ts_first < self.oldest_ms):
            self.oldest_ms = ts_first
        if ts_last is not None and ts_last > self.newest_ms:
            self.newest_ms = ts_last
        part = self.parts.setdefault(tp, [0, ts_first or 0])
        part[0] += n

    def emit(self, n: int) -> None:
        done, wall = time.monotonic(), time.time()

        def ms(a: float, b: float) -> int:
            return round((b - a) * 1000) if a and b else -1

        def age(at: float, ts_ms: int) -> int:
            return round(at * 1000 - ts_ms) if ts_ms else -1

        log.debug(
            "n=%d cap=%d fetches=%d age@fill=%d/%d fill=%d put=%d queue=%d exec=%d proc=%d "
            "age@done=%d paused=%d flow=%d chan=%d parts=%s",
            n,
            self.cap,
            self.fetches,
            age(self.filled_wall, self.oldest_ms),
            age(self.filled_wall, self.newest_ms),
            ms(self.first, self.filled),
            ms(self.filled, self.sent),
            ms(self.sent, self.received),
            ms(self.received, self.started),
            ms(self.started, done),
            age(wall, self.oldest_ms),
            self.paused,
            self.flow,
            self.chan,
            " ".join(
                f"{tp}:{n}/{age(self.filled_wall, ts)}"
                for tp, (n, ts) in sorted(self.parts.items())
            ),
        )
