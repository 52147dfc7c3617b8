"""Per-test settings on the shared clustered stack (the session fixture ``cluster_stack``):
a test's own topic and key prefixes, its keys and topics deleted after it. Imported by
tests/conftest.py, so every test module can ask for ``on_cluster``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.kafka import delete_topics
from core.redis import connect


@pytest.fixture
def on_cluster(cluster_stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    tag = f"t{uuid.uuid4().hex[:10]}"
    s = cluster_stack.with_sections(
        kafka={"topic_prefix": tag},
        redis={"key_prefix": tag},
        storage={"url": f"file://{tmp_path / 'storage'}"},
    )
    yield s
    try:
        r = connect(s.redis.url, cluster=True)
        names = list(r.scan_iter(f"{tag}:*", count=10_000))  # every master's
        if names:
            r.delete(*names)  # split by slot by the cluster client
        r.close()
    except Exception:
        pass  # a node a fault test stopped: the keys expire with the test's prefix unused
    delete_topics(s.kafka, timeout=10)
