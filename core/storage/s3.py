"""Object store on S3 or an S3-compatible server (MinIO, ...), through boto3."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.errors import ObjectNotFound, StorageError, StorageUnavailable
from core.storage.base import ObjectStore, join


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        import boto3  # imported here: local-only users never pay for it
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=10
            ),
        )

    def _key(self, key: str) -> str:
        return join(self.prefix, key)

    def _call(self, method: str, key: str | None, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound") and key is not None:
                raise ObjectNotFound(url=self.url, key=key) from None
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise _Precondition from None
            raise StorageError(
                f"S3 {method} {key or ''}: {code}: {err}", url=self.url, key=key
            ) from err
        except BotoCoreError as err:
            raise StorageUnavailable(f"S3 {method}: {err}", url=self.url, key=key) from err

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._key(key), Body=data)

    def put_deferred(self, key: str, data: bytes) -> None:
        self.put(key, data)  # an S3 PUT is durable once it returns: nothing to defer

    def sync(self, keys: Iterable[str]) -> None:
        pass

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self._call("put_object", key, Key=self._key(key), Body=data, IfNoneMatch="*")
        except _Precondition:
            return False
        return True

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        if etag is None:
            return self.put_if_absent(key, data)
        try:
            self._call("put_object", key, Key=self._key(key), Body=data, IfMatch=etag)
        except (_Precondition, ObjectNotFound):
            return False
        return True

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        resp = self._call("get_object", key, Key=self._key(key))
        return resp["Body"].read(), resp["ETag"]

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=self._key(key))
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        if prefix.endswith("/") and not full.endswith("/"):
            full += "/"
        keys: list[str] = []
        token: str | None = None
        strip = len(self.prefix) + 1 if self.prefix else 0
        while True:
            kwargs: dict[str, Any] = {"Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call("list_objects_v2", None, **kwargs)
            keys.extend(obj["Key"][strip:] for obj in resp.get("Contents", []))
            if not resp.get("IsTruncated"):
                return sorted(keys)
            token = resp["NextContinuationToken"]

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=self._key(key))

    def check(self) -> None:
        self._call("head_bucket", None)


class _Precondition(Exception):
    """Internal signal: a conditional put was refused."""
