"""Errors of the rollout package; each carries the data a caller needs."""

from __future__ import annotations

from schemas.errors import StreamrecError


class RolloutError(StreamrecError):
    """A rollout action that cannot be done (no production, another rollout running...)."""

    def __init__(self, message: str, *, model: str, version: int | None = None) -> None:
        self.model = model
        self.version = version
        super().__init__(message)


class RolloutSuperseded(RolloutError):
    """The alias document changed under the controller (an abort, a manual change): the
    decision it was about to write no longer applies."""


class MetricsUnavailable(StreamrecError):
    """Redis or the API's /metrics could not be read; the controller retries next poll."""

    def __init__(self, source: str, url: str, reason: str) -> None:
        self.source = source
        self.url = url
        self.reason = reason
        super().__init__(f"cannot read {source} metrics at {url}: {reason}")


class SimulatorError(StreamrecError):
    """The simulator cannot run as asked (non-loopback URL, no users, bad rate)."""

    exit_code = 2
