"""Errors of the recommendation API. Each carries the HTTP status the edge maps it to, so
routes raise domain errors and only the exception handlers in ``app.py`` speak HTTP."""

from __future__ import annotations

from schemas.errors import StreamrecError


class ServingError(StreamrecError):
    status_code: int = 400


class InvalidRequest(ServingError):
    """A request parameter is unusable; ``field`` names it."""

    status_code = 422

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class AdminDisabled(ServingError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__(
            "admin endpoints are disabled: no admin token is configured "
            "(set STREAMREC_SERVE_ADMIN_TOKEN)"
        )


class Unauthorized(ServingError):
    status_code = 401

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class FeedbackRejected(ServingError):
    """The feedback could not be queued (producer queue full); the client should retry."""

    status_code = 503

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"feedback {event_id!r} not accepted: the event queue is full, retry")


class ModelUnavailable(ServingError):
    """A model version could not be loaded (missing, tampered, store down)."""

    status_code = 503

    def __init__(self, name: str, version: int | None, reason: str) -> None:
        self.name = name
        self.version = version
        self.reason = reason
        which = f"{name} v{version}" if version is not None else name
        super().__init__(f"model {which} unavailable: {reason}")


class NoRollout(ServingError):
    status_code = 404

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"no rollout of {model!r} has been requested")
