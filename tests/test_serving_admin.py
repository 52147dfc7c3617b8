"""Admin endpoints: disabled (403) without a configured token, 401 without the right bearer
token, and promote / canary / rollback through the real registry when authorised."""

from __future__ import annotations

import asyncio

import pytest

from core.config import Settings
from serving import create_app
from tests.support.serving import (
    publish,
    registry_of,
    running_client,
    serving_settings,
    trained,
)

pytestmark = pytest.mark.integration

TOKEN = "s3cret-admin-token"
ENDPOINTS = [
    ("GET", "/admin/models", None),
    ("POST", "/admin/promote", {"version": 2, "reason": "x"}),
    ("POST", "/admin/rollback", {"reason": "x"}),
    ("PUT", "/admin/canary", {"version": 2, "weight": 10}),
    ("DELETE", "/admin/canary", None),
]


@pytest.fixture
def two_versions(topics: Settings) -> Settings:
    s = serving_settings(topics)
    model = trained(str(s.cache_path)).model
    publish(s, model)
    publish(s, model, promote=False)
    return s


def _calls(settings: Settings, headers: dict[str, str]) -> list:
    async def go():
        async with running_client(create_app(settings)) as c:
            return [await c.request(m, p, json=body, headers=headers) for m, p, body in ENDPOINTS]

    return asyncio.run(go())


def test_admin_is_disabled_without_a_configured_token(two_versions: Settings) -> None:
    for resp in _calls(two_versions, {"Authorization": f"Bearer {TOKEN}"}):
        assert resp.status_code == 403
        assert "disabled" in resp.json()["detail"]
    assert registry_of(two_versions).aliases().production.version == 1  # nothing changed


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_admin_needs_the_right_bearer_token(two_versions: Settings, headers: dict) -> None:
    s = two_versions.with_sections(serve={"admin_token": TOKEN})
    for resp in _calls(s, headers):
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
    assert registry_of(s).aliases().production.version == 1


def test_authorised_admin_promotes_canaries_and_rolls_back(two_versions: Settings) -> None:
    s = two_versions.with_sections(serve={"admin_token": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    app = create_app(s)

    async def go():
        async with running_client(app) as c:
            out = {}
            out["list"] = await c.get("/admin/models", headers=auth)
            out["canary"] = await c.put(
                "/admin/canary", json={"version": 2, "weight": 100, "reason": "try"}, headers=auth
            )
            await app.state.ctx.models.poll_once()
            out["as_canary"] = await c.get("/recommend/1")
            out["weight"] = await c.put(
                "/admin/canary", json={"version": 2, "weight": 50}, headers=auth
            )
            out["clear"] = await c.delete("/admin/canary?reason=done", headers=auth)
            out["promote"] = await c.post(
                "/admin/promote", json={"version": 2, "reason": "good"}, headers=auth
            )
            await app.state.ctx.models.poll_once()
            out["promoted"] = await c.get("/recommend/1")
            out["missing"] = await c.post("/admin/promote", json={"version": 9}, headers=auth)
            out["bad"] = await c.post("/admin/promote", json={"version": "two"}, headers=auth)
            out["rollback"] = await c.post("/admin/rollback", json={"reason": "bad"}, headers=auth)
            out["again"] = await c.post("/admin/rollback", json={}, headers=auth)
            return out

    out = asyncio.run(go())
    listed = out["list"].json()
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    assert listed["aliases"]["production"]["version"] == 1
    canary = out["canary"].json()["canary"]
    assert canary["version"] == 2 and canary["weight"] == 100
    assert out["as_canary"].json()["variant"] == "canary"
    # A weight change keeps the rollout (and so each user's slice).
    assert out["weight"].json()["canary"]["rollout_id"] == canary["rollout_id"]
    assert out["clear"].json()["canary"] is None
    assert out["promote"].json()["production"]["version"] == 2
    assert out["promoted"].json()["model_version"] == 2
    assert out["missing"].status_code == 404 and "no version 9" in out["missing"].json()["detail"]
    assert out["bad"].status_code == 422
    assert out["rollback"].json()["production"]["version"] == 1
    assert out["again"].status_code == 409
    history = registry_of(s).aliases().history
    assert [h.action for h in history][-5:] == [
        "canary",
        "canary_weight",
        "canary_clear",
        "promote",
        "rollback",
    ]
    assert all(h.actor == "api-admin" for h in history[-5:])
