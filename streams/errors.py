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


class EngineConflict(StreamError):
    """The consumer group already has workers of the other stream engine. The engines join
    with different group protocols (librdkafka's ``roundrobin``; the Faust engine's own
    name), so the broker refuses the newcomer's join (INCONSISTENT_GROUP_PROTOCOL) and the
    two never share a group's partitions; the refused worker stops with this error."""

    def __init__(self, group: str, engine: str) -> None:
        self.group, self.engine = group, engine
        other = "faust" if engine == "confluent" else "confluent"
        super().__init__(
            f"consumer group {group} has workers of the {other} engine; stop them before"
            f" starting a {engine} worker, or give it another STREAMREC_STREAM_APP_ID"
        )
