"""Shared fixtures. Integration tests run against the REAL local stack (Kafka + Redis),
which the session brings up on demand with ``streamrec stack up`` (idempotent).

Every test gets its own topic prefix, Redis key prefix and storage directory, so tests
(and several engineers) can share one broker and one Redis without seeing each other."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from tests.s3_fixtures import minio, s3_settings, s3_storage  # noqa: F401 (fixtures on MinIO)


def _base_settings() -> Settings:
    # Environment first (CI may point at other ports), then the defaults.
    return Settings()


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Ensure Kafka and Redis are up (starting them if needed) and return base settings."""
    from streamrec.stack import up

    base = _base_settings()
    up(base)
    return base


@pytest.fixture
def settings(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Per-test settings on the real stack with unique topic/key prefixes and storage."""
    tag = uuid.uuid4().hex[:10]
    s = stack.model_copy(
        update={
            "topic_prefix": f"t{tag}",
            "redis_key_prefix": f"t{tag}",
            "storage_url": f"file://{tmp_path / 'storage'}",
        }
    )
    yield s
    try:  # topics of a throwaway prefix are deleted so the broker doesn't fill up
        from core.kafka import delete_topics

        delete_topics(s, timeout=10)
    except Exception:
        pass
    try:
        import redis

        r = redis.Redis.from_url(s.redis_url)
        keys = list(r.scan_iter(f"{s.redis_key_prefix}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.delete(*keys[i : i + 10_000])
    except Exception:
        pass


@pytest.fixture
def topics(settings: Settings) -> Settings:
    """Settings whose event topics exist."""
    from core.kafka import ensure_topics

    ensure_topics(settings)
    return settings
