"""Errors of the stream processor. Each carries the data a caller needs."""

from __future__ import annotations

from schemas.errors import StreamrecError


class StreamError(StreamrecError):
    """Root of the stream processor's errors."""


class SinkUnavailable(StreamError):
    """Redis or the object store could not be reached; the worker retries with backoff and
    commits nothing until the sink is back."""

    def __init__(self, sink: str, target: str, cause: BaseException) -> None:
        self.sink = sink
        self.target = target
        self.cause = cause
        super().__init__(f"{sink} at {target} is unavailable: {type(cause).__name__}: {cause}")


class WatermarkConflict(StreamError):
    """A Redis batch overlaps offsets already applied (after a crash or a rebalance). The
    caller re-sends only the offsets above ``watermark``."""

    def __init__(self, topic: str, partition: int, watermark: int) -> None:
        self.topic = topic
        self.partition = partition
        self.watermark = watermark
        super().__init__(f"{topic}[{partition}] already applied up to offset {watermark}")


class CommitFailed(StreamError):
    def __init__(self, offsets: dict[tuple[str, int], int], cause: BaseException | str) -> None:
        self.offsets = offsets
        self.cause = cause
        super().__init__(f"committing {len(offsets)} partition offset(s) failed: {cause}")
