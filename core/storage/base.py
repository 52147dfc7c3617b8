"""The object-store contract. Keys are ``/``-separated paths relative to the store's root."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable


class ObjectStore(ABC):
    """Minimal operations the platform needs, with the atomicity each caller relies on:

    - ``put`` replaces an object whole (readers never see a partial object);
    - ``put_if_absent`` creates an object only if it does not exist (immutable versions);
    - ``put_if_match`` replaces only if the current etag is the one read (alias document).
    """

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    def put_deferred(self, key: str, data: bytes) -> None:
        """``put`` for a batch made durable at once by :meth:`sync`: the object is whole
        when visible, but a crash before ``sync(keys)`` returns may lose it. A writer that
        commits a batch (e.g. Kafka offsets) calls ``sync`` before the commit."""
        self.put(key, data)

    def sync(self, keys: Iterable[str]) -> None:
        """Make the objects ``put_deferred`` under ``keys`` durable (no-op where ``put`` is
        already durable on return)."""
        return None

    def remove_stale_temp(self, prefix: str, name_prefix: str, older_than: float) -> list[str]:
        """Delete the temporary files a killed writer left under ``prefix`` (names starting
        with ``name_prefix``, last written before epoch ``older_than``); returns their paths.
        A no-op where writes leave no temporary files."""
        return []

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """True if created; False if the key already existed (nothing written)."""

    @abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        """Replace ``key`` if its etag is still ``etag`` (None: only if absent)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Raises ObjectNotFound."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def check(self) -> None:
        """Raise StorageUnavailable if the store cannot be used (readiness probes)."""
        self.list("__probe__/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
