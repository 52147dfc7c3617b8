"""Object storage: a local directory (default) or S3. Build one with :func:`open_store`."""

from __future__ import annotations

from urllib.parse import urlparse

from core.config_infra import StorageSettings
from core.storage.base import ObjectStore, join
from schemas.errors import ConfigError

__all__ = ["ObjectStore", "join", "open_store"]


def open_store(url: str | StorageSettings, *, endpoint_url: str | None = None) -> ObjectStore:
    """``file:///abs/path`` (or a plain path) -> LocalStore; ``s3://bucket/prefix`` -> S3Store.
    Given the storage section, its URL and endpoint."""
    if isinstance(url, StorageSettings):
        endpoint_url = endpoint_url or url.s3_endpoint_url
        url = url.location
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from core.storage.local import LocalStore

        return LocalStore(parsed.path if parsed.scheme else url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"storage URL {url!r} has no bucket (expected s3://bucket/prefix)")
        from core.storage.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url)
    raise ConfigError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")
