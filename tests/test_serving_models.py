"""The model cache: LRU eviction, one load under concurrent first requests, tampered
versions refused, alias changes picked up in the background, canary routing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from core.config import Settings
from serving import create_app
from serving.routing import canary_bucket
from tests.support.serving import (
    publish,
    registry_of,
    running_client,
    serving_settings,
    trained,
    write_history,
)

pytestmark = pytest.mark.integration


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def test_concurrent_first_requests_load_the_model_once(topics: Settings) -> None:
    s = serving_settings(topics)
    publish(s, trained(str(s.cache_path)).model)
    app = create_app(s)

    async def go():
        async with running_client(app) as c:
            users = [str(u) for u in range(1, 31)]
            bodies = await asyncio.gather(*(c.get(f"/recommend/{u}?k=5") for u in users))
            return [b.json() for b in bodies], (await c.get("/metrics")).text

    bodies, metrics = asyncio.run(go())
    assert all(b["variant"] == "production" and b["model_version"] == 1 for b in bodies)
    assert app.state.ctx.models.loads == 1
    assert _metric(metrics, 'streamrec_serving_model_loads_total{outcome="ok"}') == 1.0
    assert _metric(metrics, "streamrec_serving_model_cache_misses_total") == 30.0
    assert _metric(metrics, "streamrec_serving_model_cache_hits_total") == 0.0


def test_the_lru_evicts_the_least_recently_used_version(topics: Settings) -> None:
    s = serving_settings(topics, serve={"model_cache_size": 2})
    model = trained(str(s.cache_path)).model
    for _ in range(3):
        publish(s, model, promote=False)
    app = create_app(s)

    async def go():
        async with running_client(app) as c:
            models = app.state.ctx.models
            for version in (1, 2, 1, 3):  # 1 was used after 2, so 2 is the one to go
                await models.get(version)
            kept = models.loaded_versions
            await models.get(2)  # evicted: loaded again, pushing out 1
            return kept, models.loaded_versions, models.loads, (await c.get("/metrics")).text

    kept, after, loads, metrics = asyncio.run(go())
    assert kept == [1, 3]
    assert after == [3, 2]
    assert loads == 4
    assert _metric(metrics, "streamrec_serving_model_cache_evictions_total") == 2.0
    assert _metric(metrics, "streamrec_serving_models_loaded") == 2.0


def test_a_tampered_version_is_refused_and_the_answer_falls_back(topics: Settings) -> None:
    s = serving_settings(topics)
    version = publish(s, trained(str(s.cache_path)).model)
    storage = Path(s.storage.location.removeprefix("file://"))
    artifact = next(
        p for p in (storage / "models/reco" / str(version)).iterdir() if p.suffix == ".npz"
    )
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    artifact.write_bytes(bytes(data))

    async def go():
        async with running_client(create_app(s)) as c:
            return (await c.get("/recommend/1")).json()

    body = asyncio.run(go())
    assert body["variant"] == "fallback" and body["fallback_reason"] == "model_unavailable"


def test_alias_changes_are_adopted_after_the_new_version_loaded(topics: Settings) -> None:
    s = serving_settings(topics)
    model = trained(str(s.cache_path)).model
    publish(s, model)
    publish(s, model, promote=False)
    registry = registry_of(s)
    app = create_app(s)

    async def go():
        async with running_client(app) as c:
            models = app.state.ctx.models
            before = (await c.get("/recommend/1")).json()["model_version"]
            registry.promote(2, reason="test", actor="test")
            stale = (await c.get("/recommend/1")).json()["model_version"]  # not polled yet
            changed = await models.poll_once()
            loaded_when_adopted = 2 in models.loaded_versions
            after = (await c.get("/recommend/1")).json()["model_version"]
            unchanged = await models.poll_once()
            registry.rollback(reason="test", actor="test")
            await models.poll_once()
            rolled = (await c.get("/recommend/1")).json()["model_version"]
            return before, stale, changed, loaded_when_adopted, after, unchanged, rolled

    before, stale, changed, loaded, after, unchanged, rolled = asyncio.run(go())
    assert (before, stale, after, rolled) == (1, 1, 2, 1)
    assert changed and loaded and not unchanged


def test_canary_weight_routes_a_stable_share_of_users(topics: Settings) -> None:
    s = serving_settings(topics)
    model = trained(str(s.cache_path)).model
    publish(s, model)
    publish(s, model, promote=False)
    registry_of(s).set_canary(2, 30.0, rollout_id="r1", reason="test", actor="test")
    users = [str(u) for u in range(1, 201)]

    async def go():
        async with running_client(create_app(s)) as c:
            first = [(await c.get(f"/recommend/{u}?k=3")).json() for u in users]
            again = [(await c.get(f"/recommend/{u}?k=3")).json() for u in users[:50]]
            return first, again

    first, again = asyncio.run(go())
    canary = {b["user_id"] for b in first if b["variant"] == "canary"}
    assert all(b["model_version"] == (2 if b["variant"] == "canary" else 1) for b in first)
    assert canary == {u for u in users if canary_bucket(u, "r1") < 30.0}
    assert 30 <= len(canary) <= 90  # about 30% of 200
    assert all((b["variant"] == "canary") == (b["user_id"] in canary) for b in again)


def test_memoised_answers_are_exact_and_a_new_event_invalidates_them(topics: Settings) -> None:
    s = serving_settings(topics)
    publish(s, trained(str(s.cache_path)).model)
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    write_history(r, s, "fan", ["1", "423", "132"])
    app = create_app(s)

    async def go():
        async with running_client(app) as c:
            before = (await c.get("/metrics")).text
            first = (await c.get("/recommend/fan?k=10")).json()["items"]
            again = (await c.get("/recommend/fan?k=10")).json()["items"]
            fewer = (await c.get("/recommend/fan?k=5")).json()["items"]  # k is in the key
            write_history(r, s, "fan", ["1", "423", "132", first[0]])  # a new watch event
            after = (await c.get("/recommend/fan?k=10")).json()["items"]
            return before, first, again, fewer, after, (await c.get("/metrics")).text

    before, first, again, fewer, after, metrics = asyncio.run(go())
    # Both series exist before the first request, at 0 (a hit-ratio panel shows 0%, not
    # "no data").
    assert _metric(before, 'streamrec_serving_result_cache_total{result="hit"}') == 0.0
    assert _metric(before, 'streamrec_serving_result_cache_total{result="miss"}') == 0.0
    assert again == first and fewer == first[:5]
    assert first[0] not in after and after != first
    assert _metric(metrics, 'streamrec_serving_result_cache_total{result="hit"}') == 1.0
    assert _metric(metrics, 'streamrec_serving_result_cache_total{result="miss"}') == 3.0
