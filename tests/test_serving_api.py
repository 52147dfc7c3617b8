"""The recommendation API against the real Redis and Kafka, with a real two-stage model
(ALS + LightGBM trained on MovieLens-100K) published to the test's registry."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import redis

from core.config import Settings
from schemas.codec import decode_event
from schemas.redis_keys import RedisKeys
from serving import create_app
from tests.support.kafka import consume_all
from tests.support.serving import (
    publish,
    running_client,
    serving_settings,
    trained,
    training_items,
    write_history,
    write_trending,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def served(topics: Settings) -> Settings:
    """Settings whose registry has the trained model in production (version 1)."""
    s = serving_settings(topics)
    assert publish(s, trained(str(s.cache_path)).model) == 1
    return s


@pytest.fixture
def r(served: Settings) -> redis.Redis:
    return redis.Redis.from_url(served.redis.url, decode_responses=True)


def test_known_user_gets_personalised_items_without_seen_ones(served: Settings) -> None:
    model = trained(str(served.cache_path)).model
    seen = training_items(model, "1")

    async def go():
        async with running_client(create_app(served)) as c:
            fast, routed = await c.get("/recommend/1?k=10"), await c.get("/recommend/1?k=010")
            text = await c.get("/recommend/1?k=10", headers={"Accept": "text/plain"})
            text_routed = await c.get("/recommend/1?k=010&format=text")
            return fast, routed, (text, text_routed), (await c.get("/recommend/2")).json()

    fast, routed, texts, two = asyncio.run(go())
    one = fast.json()
    # A plain request takes the fast path (serving.routes.recommend.RecommendFastPath), a
    # k with a leading zero FastAPI's route: the same answer, body and headers.
    assert {**routed.json(), "request_id": one["request_id"]} == one
    assert texts[0].text == texts[1].text == ",".join(one["items"])
    for a, b in (fast, routed), texts:
        assert a.headers["content-type"] == b.headers["content-type"]
    # Model calls on the event loop (STREAMREC_SERVE_MODEL_INLINE) answer the same.
    inline = served.with_sections(serve={"model_inline": True})

    async def go_inline():
        async with running_client(create_app(inline)) as c:
            return (await c.get("/recommend/1?k=10")).json()

    assert asyncio.run(go_inline())["items"] == one["items"]
    assert one["variant"] == "production" and one["fallback_reason"] is None
    assert one["model_name"] == "reco" and one["model_version"] == 1
    assert len(one["items"]) == 10 and not seen & set(one["items"])
    # Exactly the model's ranking for this user with training items excluded...
    expected = [i for i, _ in model.recommend("1", 10, exclude=seen)]
    assert one["items"] == expected
    # ...which is personal: another user's list differs, and the default k is 20.
    assert len(two["items"]) == 20 and two["items"][:10] != one["items"]
    assert one["request_id"] != two["request_id"] and one["request_id"].isalnum()


def test_new_user_with_five_watch_events_gets_results_that_reflect_them(
    served: Settings, r: redis.Redis
) -> None:
    tr = trained(str(served.cache_path))
    genres = {rec.item_id: rec.genres for rec in tr.ml.catalog}
    by_pop = [i for i, _ in tr.popularity.recommend("", 2000)]
    watched = [i for i in by_pop if "Children's" in genres[i]][:5]
    user = f"newbie-{uuid.uuid4().hex[:6]}"
    write_history(r, served, user, watched)

    async def go():
        async with running_client(create_app(served)) as c:
            return (await c.get(f"/recommend/{user}")).json()

    body = asyncio.run(go())
    assert body["variant"] == "production", body
    items = body["items"]
    assert len(items) == 20 and not set(watched) & set(items)
    popular = [i for i, _ in tr.popularity.recommend("", 20)]
    assert items != popular
    childrens = sum("Children's" in genres[i] for i in items)
    assert childrens >= 3 and childrens > sum("Children's" in genres[i] for i in popular)
    expected = tr.model.recommend(user, 20, history=watched[::-1], exclude=set(watched))
    assert items == [i for i, _ in expected]


def test_unknown_user_without_history_gets_trending_fallback(
    served: Settings, r: redis.Redis
) -> None:
    write_trending(r, served, {"50": 9.0, "181": 8.0, "100": 7.0, "258": 6.0})

    async def go():
        async with running_client(create_app(served)) as c:
            json_body = (await c.get("/recommend/stranger?k=3")).json()
            text = await c.get("/recommend/stranger?k=3&format=text")
            accept = await c.get("/recommend/stranger?k=3", headers={"Accept": "text/plain"})
            return json_body, text, accept

    body, text, accept = asyncio.run(go())
    assert body["variant"] == "fallback" and body["fallback_reason"] == "unknown_user"
    assert body["items"] == ["50", "181", "100"] and body["model_version"] is None
    for resp in (text, accept):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.text == "50,181,100"  # the CMU contract: no spaces, no JSON


def test_fallback_skips_seen_items_and_tops_up_from_the_model(
    served: Settings, r: redis.Redis
) -> None:
    # A user whose only event is an item the model never saw: no personal signal, so
    # popularity without the seen item, topped up from the model's stored popularity.
    write_trending(r, served, {"brand-new-film": 10.0, "50": 9.0, "181": 8.0})
    write_history(r, served, "walker", ["brand-new-film"])
    tr = trained(str(served.cache_path))

    async def go():
        async with running_client(create_app(served)) as c:
            return (await c.get("/recommend/walker?k=5")).json()

    body = asyncio.run(go())
    assert body["variant"] == "fallback" and body["fallback_reason"] == "unknown_user", body
    assert body["items"][:2] == ["50", "181"]
    stored = [i for i, _ in tr.popularity.recommend("", 10, exclude={"50", "181"})]
    assert body["items"][2:] == stored[:3]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/recommend/1?k=0", "k"),
        ("/recommend/1?k=101", "k"),
        ("/recommend/1?k=abc", "k"),
        ("/recommend/1?format=xml", "format"),
        ("/recommend/a%01b", "user_id"),
        ("/recommend/a%20b", "user_id"),
        ("/recommend/a,b", "user_id"),
        ("/recommend/" + "x" * 257, "user_id"),
    ],
)
def test_invalid_input_is_a_clear_422(served: Settings, path: str, field: str) -> None:
    async def go():
        async with running_client(create_app(served)) as c:
            return await c.get(path)

    resp = asyncio.run(go())
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith(f"{field}: ")


def test_nothing_a_client_sends_gives_a_5xx(served: Settings) -> None:
    probes = [
        ("GET", "/recommend/%FF%FE", None, {}),
        ("GET", "/recommend/%F0%9F%8E%AC", None, {}),  # emoji: a valid id
        ("GET", "/recommend/1?k=99999999999999999999999", None, {}),
        ("GET", "/recommend/1", None, {"Accept": "\x7f/\x00"}),
        ("POST", "/feedback", b"\xff\xfe", {"Content-Type": "application/json"}),
        ("POST", "/feedback", b"[]", {"Content-Type": "application/json"}),
        ("POST", "/feedback", b"{" * 5000, {"Content-Type": "application/json"}),
        ("POST", "/admin/promote", b"{}", {"Authorization": "Bearer \x01"}),
        ("DELETE", "/recommend/1", None, {}),
    ]

    async def go():
        async with running_client(create_app(served)) as c:
            return [await c.request(m, p, content=b, headers=h) for m, p, b, h in probes]

    for (method, path, _, _), resp in zip(probes, asyncio.run(go()), strict=True):
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text)
        if resp.status_code == 422:
            assert resp.json()["detail"]


def test_every_recommendation_is_logged_to_kafka(served: Settings) -> None:
    async def go():
        async with running_client(create_app(served)) as c:
            return [(await c.get(f"/recommend/{u}?k=4")).json() for u in ("1", "stranger")]

    served_bodies = asyncio.run(go())  # leaving the lifespan flushes the producer
    responses = consume_all(served.kafka.bootstrap, served.topic("reco_responses"), 2)
    requests = consume_all(served.kafka.bootstrap, served.topic("reco_requests"), 2)
    logged = {e.request_id: e for e in (decode_event(m.value()) for m in responses)}
    asked = {e.request_id: e for e in (decode_event(m.value()) for m in requests)}
    assert len(logged) == len(asked) == 2
    for body in served_bodies:
        event = logged[body["request_id"]]
        assert event.items == body["items"] and event.variant == body["variant"]
        assert event.user_id == body["user_id"] and event.fallback_reason == body["fallback_reason"]
        assert asked[body["request_id"]].k == 4
    assert logged[served_bodies[0]["request_id"]].model_version == "1"


def test_feedback_is_validated_idempotent_and_published(served: Settings) -> None:
    event = {"event_id": f"fb-{uuid.uuid4().hex}", "user_id": "1", "item_id": "50"}

    async def go():
        async with running_client(create_app(served)) as c:
            first = await c.post("/feedback", json={**event, "kind": "click", "value": 1})
            again = await c.post("/feedback", json={**event, "kind": "click", "value": 1})
            bad_kind = await c.post("/feedback", json={**event, "kind": "stare"})
            bad_json = await c.post(
                "/feedback", content=b'{"event_id": ', headers={"Content-Type": "application/json"}
            )
            extra = await c.post("/feedback", json={**event, "kind": "like", "admin": True})
            return first, again, bad_kind, bad_json, extra

    first, again, bad_kind, bad_json, extra = asyncio.run(go())
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    assert bad_kind.status_code == 422 and bad_kind.json()["detail"].startswith("body.kind: ")
    assert bad_json.status_code == 422 and "JSON" in bad_json.json()["detail"]
    assert extra.status_code == 422 and "admin" in extra.json()["detail"]
    msgs = consume_all(served.kafka.bootstrap, served.topic("feedback"), 1)
    assert [decode_event(m.value()).event_id for m in msgs] == [event["event_id"]]
    assert msgs[0].key() == b"1"
    # The id is remembered under the key schemas.redis_keys documents, with its TTL.
    r = redis.Redis.from_url(served.redis.url, decode_responses=True)
    dedup = RedisKeys(served.redis.key_prefix).feedback_dedup(event["event_id"])
    assert r.get(dedup) == "1"
    assert 0 < r.ttl(dedup) <= served.serve.feedback_dedup_ttl_s


def test_health_ready_metrics_and_openapi(served: Settings) -> None:
    app = create_app(served)

    async def go():
        async with running_client(app) as c:
            live = await c.get("/healthz")
            ready = await c.get("/readyz")  # loads the production model (lazy otherwise)
            await c.get("/recommend/1")
            await c.get("/recommend/stranger")
            return live, ready, (await c.get("/metrics")).text, (await c.get("/openapi.json"))

    live, ready, metrics, openapi = asyncio.run(go())
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "item_features": "ok",
        "kafka": "ok",
        "model": "ok",
        "redis": "ok",
        "registry": "ok",
    }
    assert (
        'streamrec_serving_request_seconds_count{endpoint="/recommend/{user_id}",'
        'model_version="1",status="200",variant="production"} 1.0' in metrics
    )
    assert 'streamrec_serving_fallbacks_total{reason="unknown_user"} 1.0' in metrics
    assert "streamrec_serving_model_loads_total" in metrics
    assert "streamrec_serving_model_load_seconds_count 1.0" in metrics
    paths = orjson.loads(openapi.content)["paths"]
    for path in ("/recommend/{user_id}", "/feedback", "/healthz", "/readyz", "/metrics"):
        assert path in paths
    assert {"/admin/models", "/admin/promote", "/admin/rollback", "/admin/canary"} <= set(paths)


def test_readyz_is_503_until_a_model_is_in_production(topics: Settings) -> None:
    async def go():
        async with running_client(create_app(serving_settings(topics))) as c:
            return await c.get("/readyz")

    resp = asyncio.run(go())
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["redis"] == checks["kafka"] == checks["registry"] == "ok"
    assert "no production version" in checks["model"]
