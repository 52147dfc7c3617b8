"""Errors of the shared clients (storage, Kafka)."""

from __future__ import annotations

from schemas.errors import ConfigError, StreamrecError


class StorageError(StreamrecError):
    def __init__(self, message: str, *, url: str, key: str | None = None) -> None:
        self.url = url
        self.key = key
        super().__init__(message)


class ObjectNotFound(StorageError):
    def __init__(self, *, url: str, key: str) -> None:
        super().__init__(f"no object {key!r} in {url}", url=url, key=key)


class PreconditionFailed(StorageError):
    """A conditional write lost a race: the object exists, or changed since it was read."""

    def __init__(self, *, url: str, key: str) -> None:
        super().__init__(f"{key!r} in {url} changed concurrently", url=url, key=key)


class StorageUnavailable(StorageError):
    """The store could not be reached; callers retry with backoff."""


class KafkaError(StreamrecError):
    def __init__(self, message: str, *, bootstrap: str | None = None) -> None:
        self.bootstrap = bootstrap
        super().__init__(message)


class DeliveryFailed(KafkaError):
    def __init__(self, failed: int, first_reasons: list[str], *, bootstrap: str) -> None:
        self.failed = failed
        self.first_reasons = first_reasons
        reasons = "; ".join(first_reasons[:3])
        super().__init__(f"{failed} message(s) not delivered: {reasons}", bootstrap=bootstrap)


class RedisConfigError(ConfigError):
    """Redis is not what the settings say (a standalone server given the cluster flag, a
    cluster without it, slots not covered, no node reachable at start)."""

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)
