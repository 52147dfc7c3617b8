"""The rollout controller's live source reads the online-evaluation counters the stream
processor keeps per Kafka partition (schemas.redis_keys): a step's cohort is the sum over
every partition's slot, on a standalone Redis and on the Redis Cluster alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from core.config import Settings
from core.redis import connect
from rollout.live_source import LiveMetricsSource
from schemas.redis_keys import ONLINE_EVAL_BUCKET_S, RedisKeys, online_eval_field

pytestmark = pytest.mark.integration

T = 1_700_000_000  # a bucket boundary
ARMS = {"production": 1, "canary": 2}
REPO = Path(__file__).resolve().parent.parent


def _field(variant: str, metric: str) -> str:
    return online_eval_field("reco", ARMS[variant], variant, metric)


def _seed(r, s: Settings) -> None:
    """Responses served by users of different partitions during one step (and one before)."""
    p = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions).all_slots()
    assert len(p) >= 4
    b = ONLINE_EVAL_BUCKET_S
    served, converted = _field("production", "served"), _field("production", "converted")
    canary, canary_conv = _field("canary", "served"), _field("canary", "converted")
    r.hset(p[0].online_eval_bucket(T), mapping={served: 5, converted: 2})
    r.hset(p[3].online_eval_bucket(T + b), mapping={served: 7, converted: 1, canary: 4})
    r.hset(p[1].online_eval_bucket(T + 2 * b), mapping={canary: 6, canary_conv: 3})
    r.hset(p[2].online_eval_bucket(T - b), mapping={served: 100})  # before the step began


def _counters(source: LiveMetricsSource) -> dict[str, tuple[int, int]]:
    try:
        return source.counters("reco", ARMS, since=T, until=T + 2 * ONLINE_EVAL_BUCKET_S + 5)
    finally:
        source.close()


def test_counters_are_summed_over_every_partitions_slot(settings: Settings) -> None:
    _seed(redis.Redis.from_url(settings.redis.url), settings)
    counts = _counters(LiveMetricsSource.from_settings(settings, "http://127.0.0.1:1"))
    assert counts == {"production": (12, 3), "canary": (10, 3)}


def test_counters_on_the_redis_cluster(on_cluster: Settings) -> None:
    r = connect(on_cluster.redis.url, cluster=True)
    _seed(r, on_cluster)
    r.close()
    counts = _counters(LiveMetricsSource.from_settings(on_cluster, "http://127.0.0.1:1"))
    assert counts == {"production": (12, 3), "canary": (10, 3)}


def test_the_cluster_flag_on_a_standalone_redis_is_one_error_line(
    settings: Settings, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STREAMREC_REDIS_URL": settings.redis.url,  # the single-node stack's redis-server
        "STREAMREC_REDIS_CLUSTER": "true",
        "STREAMREC_STORAGE_URL": settings.storage.location,
        "STREAMREC_REDIS_KEY_PREFIX": settings.redis.key_prefix,
    }
    out = subprocess.run(
        [sys.executable, "-m", "streamrec", "rollout", "status", "reco"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a cluster node" in lines[0], out.stderr
