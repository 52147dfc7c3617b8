"""Fixtures for tests on real S3: a local MinIO started by ``streamrec stack up --service
minio`` (built from source with ``go install`` on first use, then cached in .cache/bin).

Imported by tests/conftest.py, so every test module can ask for:

- ``minio``: session-wide base settings with MinIO up and its bucket created;
- ``s3_storage``: settings whose ``storage_url`` is a unique ``s3://<bucket>/<prefix>`` on
  MinIO (no Kafka/Redis needed); the prefix is emptied after the test;
- ``s3_settings``: the per-test ``settings`` (real Kafka + Redis, unique prefixes) with
  the same kind of S3 storage, for stream-processor and registry tests.

boto3 reads credentials from the environment, so both set ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` to MinIO's for the test (and any
subprocess it starts); ``open_store(s.storage, endpoint_url=s.storage.s3_endpoint_url)`` then works.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core.config import Settings


@pytest.fixture(scope="session")
def minio() -> Settings:
    """Base settings (environment first) with the local MinIO up and the bucket created."""
    from streamrec.stack import up
    from streamrec.stack.minio import MinioService

    base = Settings()
    service = MinioService(base)
    # Build outside `up`: `up` holds the stack lock, and a cold build takes minutes that
    # other sessions' `stack up` would otherwise spend waiting.
    service.ensure_installed()
    (state,) = up(base, ["minio"])
    assert state.state in {"started", "running", "external"}, state
    service.ensure_bucket()  # also when MinIO was already running (up leaves it alone)
    return base.with_sections(storage={"s3_endpoint_url": service.endpoint_url})


@pytest.fixture
def s3_storage(minio: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with storage under a fresh prefix of the MinIO bucket; emptied afterwards."""
    from streamrec.stack.minio import MinioService

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.minio.root_user)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.minio.root_password.get_secret_value())
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for leaked in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(leaked, raising=False)
    # Safety net: boto3 clients built without endpoint_url (a subprocess given only the
    # storage URL) reach MinIO too, never real AWS with these credentials.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", str(minio.storage.s3_endpoint_url))
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield minio.with_sections(storage={"url": f"s3://{minio.minio.bucket}/{prefix}"})
    _empty_prefix(MinioService(minio).client(), minio.minio.bucket, prefix + "/")


@pytest.fixture
def s3_settings(settings: Settings, s3_storage: Settings) -> Settings:
    """The per-test ``settings`` on the real Kafka/Redis, with storage on MinIO."""
    return settings.with_sections(
        storage={
            "url": s3_storage.storage.url,
            "s3_endpoint_url": s3_storage.storage.s3_endpoint_url,
        }
    )


def _empty_prefix(client: Any, bucket: str, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
