"""Dev-only timeline of the confluent engine's loop (issue 20, the freshness tail): one log
line per micro-batch with where its time went, from the consume to the batch being applied
in Redis. Off unless the logger ``streams.loop_trace`` is at DEBUG
(``STREAMREC_LOG_LEVEL=DEBUG``); when off, the loop carries ``None`` instead of a trace and
pays one test per stage. The Faust engine's counterpart is :mod:`streams.faust_trace`.

A line reads (times in ms)::

    n=212 cap=1000 age@consume=38/2 consume=20 gap=0 decode=4 redis_wait=3 submit=1
    flush=0 flushing=1 lag=0 trending=0 catalog=0 applied=9 age@applied=47 parts=0:53 1:50

``age@consume`` is the age of the batch's oldest / newest record (now minus its Kafka
timestamp, the producer's clock: same host) when ``consume`` returned; ``consume`` the
time in it; ``gap`` from the previous iteration's end to this consume; ``decode`` what
``Processor.process`` spent decoding (and the loop grouping the records); ``redis_wait``
waiting for the call in flight before sending dead letters (0 without any); ``submit``
preparing this batch's call, waiting for the call in flight and starting this one;
``flush`` the Parquet cadence's step (cutting a job, committing a durable one: ``commit``
in it), ``flushing`` whether a
write was in flight; ``applied`` from consume's return to this batch's call being done in
Redis (logged one batch late: the line is emitted when the next batch starts) and
``age@applied`` the oldest record's age then: what a probe of the batch waited.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("streams.loop_trace")


def enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


@dataclass
class LoopTrace:
    n: int = 0
    cap: int = 0
    start: float = 0.0  # perf_counter: consume called
    consumed: float = 0.0  # consume returned
    consumed_wall: float = 0.0
    prev_end: float = 0.0  # the previous iteration's end
    end: float = 0.0  # this iteration's end (perf_counter)
    mark: float = 0.0  # where the next lap() starts (perf_counter)
    oldest_ms: int = 0
    newest_ms: int = 0
    # stage -> seconds (decode, redis_wait, submit, flush, commit, lag, trending, catalog)
    stages: dict[str, float] = field(default_factory=dict)
    flushing: bool = False
    applied: float = 0.0  # perf_counter: the batch's Redis call done (Redis thread)
    parts: dict[int, int] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def lap(self, stage: str) -> float:
        """Add the time since the last lap (or ``mark``) to ``stage``; returns now."""
        now = time.perf_counter()
        self.add(stage, now - self.mark)
        self.mark = now
        return now

    def note_applied(self) -> None:
        self.applied = time.perf_counter()

    def emit(self) -> None:
        def ms(seconds: float) -> int:
            return round(seconds * 1000)

        applied = self.applied - self.consumed if self.applied else -1.0
        age_applied = (
            self.consumed_wall * 1000 - self.oldest_ms + applied * 1000
            if self.applied and self.oldest_ms
            else -1
        )
        st = self.stages
        log.debug(
            "n=%d cap=%d age@consume=%d/%d consume=%d gap=%d decode=%d redis_wait=%d "
            "submit=%d flush=%d commit=%d flushing=%d lag=%d trending=%d catalog=%d "
            "applied=%d age@applied=%d parts=%s",
            self.n,
            self.cap,
            round(self.consumed_wall * 1000 - self.oldest_ms) if self.oldest_ms else -1,
            round(self.consumed_wall * 1000 - self.newest_ms) if self.newest_ms else -1,
            ms(self.consumed - self.start),
            ms(self.start - self.prev_end) if self.prev_end else -1,
            ms(st.get("decode", 0.0)),
            ms(st.get("redis_wait", 0.0)),
            ms(st.get("submit", 0.0)),
            ms(st.get("flush", 0.0)),
            ms(st.get("commit", 0.0)),
            self.flushing,
            ms(st.get("lag", 0.0)),
            ms(st.get("trending", 0.0)),
            ms(st.get("catalog", 0.0)),
            ms(applied) if applied >= 0 else -1,
            round(age_applied),
            " ".join(f"{p}:{n}" for p, n in sorted(self.parts.items())),
        )
