"""Outages answer 200 from popularity: Redis down, model store down (before or after the
aliases were read), the time budget exceeded, a model load slower than the budget."""

from __future__ import annotations

import asyncio
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from core.config import Settings
from serving import create_app
from tests.support.serving import (
    free_port,
    publish,
    running_client,
    serving_settings,
    throwaway_redis,
    trained,
    training_items,
    write_history,
    write_trending,
)

pytestmark = pytest.mark.integration

TRENDING = {"50": 9.0, "181": 8.0, "100": 7.0, "258": 6.0, "294": 5.0}


@pytest.fixture
def served(topics: Settings) -> Settings:
    s = serving_settings(topics)
    publish(s, trained(str(s.cache_path)).model)
    return s


def test_redis_outage_answers_200_from_the_last_trending_seen(
    served: Settings, tmp_path: Path
) -> None:
    with throwaway_redis(tmp_path) as (proc, port):
        s = served.with_sections(redis={"url": f"redis://127.0.0.1:{port}/0"})
        r = redis.Redis(port=port, decode_responses=True)
        write_trending(r, s, TRENDING)
        write_history(r, s, "newbie", ["1", "423", "132", "151", "8"])
        app = create_app(s)

        async def go():
            async with running_client(app) as c:
                ctx = app.state.ctx
                # Loaded first: on a loaded host, loading and compiling the ranker can outlast
                # the budget (a model_loading fallback), which is not what this test is about.
                await ctx.models.preload()
                before = (await c.get("/recommend/newbie?k=3")).json()
                await ctx.items.refresh()  # the background sweep, now
                proc.kill()
                proc.wait(5)
                during = [await c.get(f"/recommend/{u}?k=3") for u in ("newbie", "1", "x")]
                text = await c.get("/recommend/1?k=3&format=text")
                metrics = (await c.get("/metrics")).text
                return before, during, text, metrics

        before, during, text, metrics = asyncio.run(go())
    assert before["variant"] == "production"
    seen = training_items(trained(str(served.cache_path)).model, "1")
    for user, resp in zip(("newbie", "1", "x"), during, strict=True):
        assert resp.status_code == 200
        body = resp.json()
        assert body["variant"] == "fallback" and body["fallback_reason"] == "redis_unavailable"
        if user != "1":
            assert body["items"] == ["50", "181", "100"]  # trending as last read from Redis
        else:  # without Redis, what the loaded model knows user 1 saw is still excluded
            assert len(body["items"]) == 3 and not set(body["items"]) & seen
    assert text.status_code == 200 and text.text == ",".join(during[1].json()["items"])
    assert 'streamrec_serving_fallbacks_total{reason="redis_unavailable"} 4.0' in metrics


def test_model_store_gone_after_aliases_were_read_answers_200(served: Settings) -> None:
    r = redis.Redis.from_url(served.redis.url, decode_responses=True)
    write_trending(r, served, TRENDING)
    app = create_app(served)
    storage = Path(served.storage.location.removeprefix("file://"))

    async def go():
        async with running_client(app) as c:
            aliases = await app.state.ctx.models.aliases()
            shutil.move(storage, storage.with_name("storage-gone"))  # the store vanishes
            resp = await c.get("/recommend/1?k=2")
            ready = await c.get("/readyz")
            return aliases, resp, ready

    aliases, resp, ready = asyncio.run(go())
    assert aliases.production is not None and aliases.production.version == 1
    assert resp.status_code == 200
    assert resp.json()["fallback_reason"] == "model_unavailable"
    assert resp.json()["items"] == ["50", "181"]
    assert ready.status_code == 503 and ready.json()["checks"]["model"] != "ok"


def test_a_loaded_model_keeps_serving_when_the_store_goes_away(served: Settings) -> None:
    app = create_app(served)
    storage = Path(served.storage.location.removeprefix("file://"))

    async def go():
        async with running_client(app) as c:
            first = (await c.get("/recommend/1?k=5")).json()
            shutil.rmtree(storage)
            return first, (await c.get("/recommend/1?k=5")).json()

    first, second = asyncio.run(go())
    assert first["variant"] == second["variant"] == "production"
    assert second["items"] == first["items"]


def test_unreachable_store_from_the_start_answers_200(topics: Settings) -> None:
    # An S3 endpoint where nothing listens: every registry call fails.
    s = serving_settings(
        topics, storage={"url": "s3://no-bucket/models", "s3_endpoint_url": "http://127.0.0.1:9"}
    )
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    write_trending(r, s, TRENDING)

    async def go():
        async with running_client(create_app(s)) as c:
            return await c.get("/recommend/1?k=2"), await c.get("/readyz")

    resp, ready = asyncio.run(go())
    assert resp.status_code == 200
    assert resp.json()["variant"] == "fallback"
    assert resp.json()["fallback_reason"] == "registry_unavailable"
    assert resp.json()["items"] == ["50", "181"]
    assert ready.status_code == 503 and ready.json()["checks"]["registry"] != "ok"


def test_model_call_past_the_budget_falls_back_with_timeout(served: Settings) -> None:
    # The compute thread's path (the one that cuts a call off at the budget).
    s = served.with_sections(serve={"budget_ms": 300.0, "model_inline": False})
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    write_trending(r, s, TRENDING)
    app = create_app(s)
    gate = threading.Event()

    async def go():
        async with running_client(app) as c:
            ctx = app.state.ctx
            await ctx.models.get(1)  # loaded: only the model call can be slow now
            # Model calls run on ctx.compute (through the batcher); with its only thread
            # busy, the call cannot finish within the budget.
            ctx.compute = ctx.batcher.executor = ThreadPoolExecutor(max_workers=1)
            ctx.compute.submit(gate.wait)
            try:
                slow = await c.get("/recommend/1?k=2")
            finally:
                gate.set()
            return slow, await c.get("/recommend/1?k=2")

    slow, after = asyncio.run(go())
    assert slow.status_code == 200
    assert slow.json()["fallback_reason"] == "timeout"
    # Popularity without what user 1 has already seen (the model knows their history).
    seen = training_items(trained(str(s.cache_path)).model, "1")
    assert slow.json()["items"] == [i for i in TRENDING if i not in seen][:2]
    assert after.json()["variant"] == "production"


def test_a_slow_first_load_never_holds_the_request_past_its_budget(served: Settings) -> None:
    s = served.with_sections(serve={"budget_ms": 300.0})
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    write_trending(r, s, TRENDING)
    app = create_app(s)
    gate = threading.Event()

    async def go():
        async with running_client(app) as c:
            models = app.state.ctx.models
            models._executor = ThreadPoolExecutor(max_workers=1)  # loads queue behind the gate
            models._executor.submit(gate.wait)
            try:
                during = await c.get("/recommend/1?k=2")
            finally:
                gate.set()
            await models.get(1)  # the load the first request started completes
            return during, await c.get("/recommend/1?k=2"), models.loads

    during, after, loads = asyncio.run(go())
    assert during.status_code == 200 and during.json()["fallback_reason"] == "model_loading"
    assert during.json()["items"] == ["50", "181"]  # no model yet: seen items unknown
    assert after.json()["variant"] == "production"
    assert loads == 1


def test_history_is_still_excluded_when_the_fallback_answers(served: Settings) -> None:
    r = redis.Redis.from_url(served.redis.url, decode_responses=True)
    write_trending(r, served, TRENDING)
    write_history(r, served, "someone", ["no-such-item", "50"])
    s = served.with_sections(storage={"url": "file:///nonexistent/streamrec-gone"})

    async def go():
        async with running_client(create_app(s)) as c:
            return (await c.get("/recommend/someone?k=3")).json()

    body = asyncio.run(go())
    assert body["variant"] == "fallback"
    assert body["items"] == ["181", "100", "258"]


def test_a_full_log_queue_drops_with_a_metric_and_never_stalls(served: Settings) -> None:
    # A broker that never answers: every log event stays queued until the queue is full.
    s = served.with_sections(
        kafka={"bootstrap": f"127.0.0.1:{free_port()}"}, serve={"log_queue_max": 100}
    )

    async def go():
        async with running_client(create_app(s)) as c:
            answers = [await c.get(f"/recommend/{u % 50 + 1}?k=3") for u in range(120)]
            return answers, (await c.get("/metrics")).text

    answers, metrics = asyncio.run(go())
    assert all(a.status_code == 200 and a.json()["variant"] == "production" for a in answers)
    dropped = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("streamrec_serving_log_dropped_total")
    )
    assert dropped == 2 * 120 - 100  # requests + responses beyond the 100 queued
