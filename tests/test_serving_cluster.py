"""Serving on the real Redis Cluster of the clustered stack (``cluster_stack``: 3 masters, 3
replicas) with ``STREAMREC_REDIS_CLUSTER=true``: a user's history is read from the slot of the
user's Kafka partition (on whichever master holds it), the item table sums the per-partition
counters kept on different masters, and feedback dedupe uses the cluster client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.config import Settings
from core.kafka import ensure_topics
from core.redis import RedisConfigError, check_kind, connect, seed_urls
from schemas.codec import decode_event
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.cluster_reader import ClusterReader
from serving.features import read_item_table
from tests.support.kafka import consume_all
from tests.support.ports import free_port
from tests.support.serving import (
    publish,
    running_client,
    serving_settings,
    trained,
    write_history,
    write_trending,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def test_recommend_and_feedback_on_the_redis_cluster(on_cluster: Settings) -> None:
    s = serving_settings(on_cluster)
    ensure_topics(s.kafka)
    assert publish(s, trained(str(s.cache_path)).model) == 1
    tr = trained(str(s.cache_path))
    genres = {rec.item_id: rec.genres for rec in tr.ml.catalog}
    by_pop = [i for i, _ in tr.popularity.recommend("", 2000)]
    watched = [i for i in by_pop if "Children's" in genres[i]][:5]
    r = connect(s.redis.url, cluster=True, decode_responses=True)
    keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
    # A user whose slot is not on the seed node (a standalone client there gets MOVED).
    seed_port = int(s.redis.url.rsplit(":", 1)[1].split("/")[0])
    user = next(
        u
        for u in (f"newbie-{n}" for n in range(100))
        if r.get_node_from_key(keys.user_slot(u).user_recent(u)).port != seed_port
    )
    write_history(r, s, user, watched)
    write_trending(r, s, {"50": 9.0, "181": 8.0, "100": 7.0})
    event = {"event_id": uuid.uuid4().hex, "user_id": user, "item_id": "50", "kind": "click"}

    async def go():
        async with running_client(create_app(s)) as c:
            # Ready once the model is loaded and warmed (seconds on a busy machine).
            for _ in range(120):
                ready = await c.get("/readyz")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.5)
            personal = (await c.get(f"/recommend/{user}")).json()
            stranger = (await c.get("/recommend/stranger?k=3")).json()
            first = await c.post("/feedback", json=event)
            again = await c.post("/feedback", json=event)
            return ready, personal, stranger, first, again

    ready, personal, stranger, first, again = asyncio.run(go())
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text
    # Personalised from the history in the user's slot, exactly as the model ranks it.
    assert personal["variant"] == "production" and personal["fallback_reason"] is None, personal
    expected = tr.model.recommend(user, 20, history=watched[::-1], exclude=set(watched))
    assert personal["items"] == [i for i, _ in expected]
    # The global trending set (another slot) answers a user without history.
    assert stranger["fallback_reason"] == "unknown_user" and stranger["items"] == [
        "50",
        "181",
        "100",
    ]
    # Dedupe by event id with SET NX through the cluster client: one event published.
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    dedup = keys.feedback_dedup(event["event_id"])
    assert r.get(dedup) == "1" and 0 < r.ttl(dedup) <= s.serve.feedback_dedup_ttl_s
    msgs = consume_all(s.kafka.bootstrap, s.topic("feedback"), 1)
    assert [decode_event(m.value()).event_id for m in msgs] == [event["event_id"]]
    r.close()


def test_the_item_table_sums_counters_kept_on_different_masters(on_cluster: Settings) -> None:
    s = on_cluster
    keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
    r = connect(s.redis.url, cluster=True, decode_responses=True)
    slots = keys.all_slots()
    masters = {r.get_node_from_key(slot.pop_all).port for slot in slots}
    assert len(masters) > 1  # the sums below cross nodes
    newest = 1_700_000_000.0
    for n, slot in enumerate(slots):  # partition n saw item "x" n + 1 times, one rating each
        r.zadd(slot.pop_all, {"x": n + 1, f"only-{n}": 1})
        r.hset(
            slot.item_stats("x"), mapping={"n_rate": 1, "rating_sum": n + 2, "last_seen": newest}
        )
        r.zadd(slot.pop_day(newest), {"x": n + 1})
    r.zadd(keys.trending, {"x": 1.0})
    r.close()

    async def go():
        reader = ClusterReader(s.redis.url)
        try:
            return await read_item_table(reader, keys, max_items=100, timeout=10)
        finally:
            await reader.aclose()

    features, trending = asyncio.run(go())
    parts = len(slots)
    total = parts * (parts + 1) / 2
    assert features["x"] == {
        "pop_all": total,
        "rating_count": float(parts),
        "rating_mean": sum(n + 2 for n in range(parts)) / parts,
        "pop_7d": total,
        "pop_30d": total,
    }
    assert {f"only-{n}" for n in range(parts)} <= set(features) and trending == [("x", 1.0)]


def _serve_once(env_update: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMREC_SERVE_PORT": str(free_port()), **env_update}
    return subprocess.run(
        [sys.executable, "-m", "streamrec", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("flag", ["true", "false"])
def test_serve_refuses_a_wrong_cluster_flag_at_start_in_one_line(
    settings: Settings, cluster_stack: Settings, flag: str
) -> None:
    # true: the single-node stack's redis-server given the flag; false: a cluster node
    # without it. Either would only have shown as fallbacks and a 503 /readyz.
    url = settings.redis.url if flag == "true" else cluster_stack.redis.url
    out = _serve_once({"STREAMREC_REDIS_URL": url, "STREAMREC_REDIS_CLUSTER": flag})
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert ("not a cluster node" if flag == "true" else "is a cluster node") in lines[0]
    assert "Traceback" not in out.stderr


def test_a_seed_list_finds_the_cluster_when_its_first_seed_is_down(
    on_cluster: Settings,
) -> None:
    port = on_cluster.redis.url.rsplit(":", 1)[1].split("/")[0]
    seeds = f"redis://127.0.0.1:{free_port()},127.0.0.1:{port}/0"  # nothing on the first
    assert seed_urls(seeds) == [
        f"redis://{seeds.split('//')[1].split(',')[0]}/0",
        f"redis://127.0.0.1:{port}/0",
    ]
    keys = RedisKeys(on_cluster.redis.key_prefix, on_cluster.kafka.topic_partitions)
    r = connect(seeds, cluster=True, decode_responses=True)
    key = keys.user_slot("seed-user").user_recent("seed-user")
    r.zadd(key, {"m1": 1.0})
    r.close()
    check_kind(seeds, cluster=True)  # answers, and is what the flag says

    async def read() -> list:
        reader = ClusterReader(seeds)
        try:
            return await reader.execute(("ZRANGE", key, "0", "-1"))
        finally:
            await reader.aclose()

    assert asyncio.run(read()) == [["m1"]]
    with pytest.raises(RedisConfigError, match="only a cluster takes"):
        connect(seeds, cluster=False)
