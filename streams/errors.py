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


class KafkaRejected(StreamError):
    """Kafka refused something for good (a record over a size limit, an invalid record, a
    denied authorization): no retry can succeed, so the worker stops with this error rather
    than hold and retry forever. Nothing of the batch at hand is committed; a restart
    replays it once the cause (a topic's limit, an ACL) is fixed."""

    def __init__(self, what: str, error: str, hint: str = "") -> None:
        self.what = what
        self.error = error
        super().__init__(
            f"kafka refused {what} permanently: {error}" + (f"; {hint}" if hint else "")
        )
