"""The registry and the stream processor against a real S3-compatible server (MinIO, started
by the `minio` fixture) through boto3 — the same code paths as on AWS S3."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from core.storage import open_store
from core.storage.s3 import S3Store
from models.errors import IntegrityError
from models.registry import ModelRegistry
from tests.support.registry import publish_popularity
from tests.support.stream_worker import (
    Truth,
    kill_mid_stream,
    produce_catalog,
    produce_events,
    start_worker,
    verify,
    wait_caught_up,
    wait_for_log,
)

pytestmark = pytest.mark.integration


def _registry(s3_storage) -> ModelRegistry:
    store = open_store(s3_storage.storage, endpoint_url=s3_storage.storage.s3_endpoint_url)
    assert isinstance(store, S3Store)
    return ModelRegistry(store, "reco")


def test_registry_on_s3_publishes_verifies_and_moves_aliases(s3_storage):
    registry = _registry(s3_storage)
    assert [publish_popularity(registry, seed) for seed in range(2)] == [1, 2]
    registry.promote(1, reason="first", actor="test")
    registry.set_canary(2, 5.0, rollout_id="r1", reason="try", actor="test")
    aliases = registry.aliases()
    assert aliases.production.version == 1 and aliases.canary.version == 2
    assert registry.load(2).recommend("u", 3)

    key = "models/reco/2/popularity.json"
    doc = orjson.loads(registry.store.get(key))
    doc["scores"][0] += 1000
    registry.store.put(key, orjson.dumps(doc))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        registry.load(2)


def test_racing_publishers_on_s3_get_distinct_versions(s3_storage):
    registry = _registry(s3_storage)
    # Conditional puts (If-None-Match / If-Match) are what keep this exact on S3.
    with ThreadPoolExecutor(4) as pool:
        versions = list(
            pool.map(lambda seed: publish_popularity(_registry(s3_storage), seed), range(8))
        )
    assert sorted(versions) == list(range(1, 9))
    history = registry.aliases().history
    assert sorted(h.version for h in history if h.action == "publish") == list(range(1, 9))
    assert registry.aliases().revision == len(history)


@pytest.mark.slow
def test_stream_worker_on_s3_is_exactly_once_across_kills(topics, s3_storage, tmp_path: Path):
    s = topics.with_sections(
        storage={
            "url": s3_storage.storage.url,
            "s3_endpoint_url": s3_storage.storage.s3_endpoint_url,
        }
    )
    truth = Truth()
    genres = produce_catalog(s, 200)
    chunk = 20_000
    produce_events(s, truth, genres, chunk, bad_every=997)
    log = tmp_path / "worker.log"
    rng = random.Random(7)
    extra = {"STREAMREC_S3_ENDPOINT_URL": str(s.storage.s3_endpoint_url)}
    proc = start_worker(s, log, **extra)
    try:
        produced = chunk
        for round_ in range(2):
            wait_for_log(log, "assigned", count=round_ + 1, procs=[proc])
            produced += kill_mid_stream(s, truth, genres, proc, rng, start=produced, chunk=chunk)
            proc = start_worker(s, log, **extra)
        wait_caught_up(s, 150, [proc])
    finally:
        proc.kill()
        proc.wait()
    verify(s, truth)
