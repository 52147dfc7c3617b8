"""The one exception root. Every package raises subclasses of :class:`StreamrecError`
that carry the data a caller needs (field, topic, path, ...), never just a string."""

from __future__ import annotations


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose. The CLI prints ``str(err)`` on one
    line and exits with :attr:`exit_code`; the API maps them to 4xx at the edge."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(StreamrecError):
    """A setting or a command-line argument is unusable."""

    exit_code = 2


class EventValidationError(StreamrecError):
    """An event failed validation. ``errors`` lists ``(field, reason)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]], *, event_type: str | None = None) -> None:
        self.errors = errors
        self.event_type = event_type
        what = f"invalid {event_type} event" if event_type else "invalid event"
        detail = "; ".join(f"{f}: {r}" if f else r for f, r in errors)
        super().__init__(f"{what}: {detail}")

    @property
    def reason(self) -> str:
        return self.message


class LogLineError(EventValidationError):
    """A CMU course log line could not be parsed."""

    def __init__(self, line: str, reason: str, *, line_no: int | None = None) -> None:
        self.line = line
        self.line_no = line_no
        where = f"line {line_no}: " if line_no is not None else ""
        super().__init__([("line", f"{where}{reason}")], event_type="log")


class RolloutConflict(StreamrecError):
    """The rollout document refuses the change (one is already running, none to abort)."""

    def __init__(self, message: str, *, model: str, rollout_id: str | None = None) -> None:
        self.model = model
        self.rollout_id = rollout_id
        super().__init__(message)
