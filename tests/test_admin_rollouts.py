"""Rollouts through the admin API: requested over HTTP, executed by the controller from the
registry's rollout document, aborted over HTTP (effective with no controller running), the
same state seen by the CLI; 4xx for bad input and 401/403 without the right token."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from core.config import Settings
from models.random_model import RandomModel
from rollout.controller import ADVANCED, IDLE, ROLLED_BACK, STARTED, RolloutController
from serving import create_app
from streamrec.stack.apps import ApiService
from tests.support.rollout import FixedSource
from tests.support.serving import publish, registry_of, running_client, serving_settings

pytestmark = pytest.mark.integration

TOKEN = "rollout-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ITEMS = [f"i{j}" for j in range(30)]


@pytest.fixture
def three_versions(topics: Settings) -> Settings:
    s = serving_settings(topics, rollout={"min_samples": 100, "settle_s": 0, "steps": "5,50,100"})
    for seed in (1, 2, 3):
        publish(s, RandomModel(ITEMS, seed=seed), promote=seed == 1)
    return _with_token(s, TOKEN)


def _with_token(s: Settings, token: str | None) -> Settings:
    return s.with_sections(serve={"admin_token": token})


def _run(settings: Settings, calls):
    """Run ``calls(client, app)`` against a live app (its lifespan running)."""

    async def go():
        app = create_app(settings)
        async with running_client(app) as c:
            return await calls(c, app)

    return asyncio.run(go())


ENDPOINTS = [
    ("POST", "/admin/rollouts", {"version": 2}),
    ("GET", "/admin/rollouts", None),
    ("GET", "/admin/rollouts/current", None),
    ("POST", "/admin/rollouts/current/abort", {"reason": "x"}),
]


@pytest.mark.parametrize(
    ("token", "headers", "status"),
    [
        (None, AUTH, 403),
        (TOKEN, {}, 401),
        (TOKEN, {"Authorization": "Bearer nope"}, 401),
    ],
)
def test_rollout_endpoints_need_the_admin_token(three_versions, token, headers, status):
    s = _with_token(three_versions, token)

    async def calls(c, app):
        return [await c.request(m, p, json=b, headers=headers) for m, p, b in ENDPOINTS]

    for resp in _run(s, calls):
        assert resp.status_code == status, resp.text
    assert registry_of(s).aliases().canary is None


def test_bad_rollout_requests_get_4xx_with_a_reason(three_versions):
    async def calls(c, app):
        out = {"none": await c.get("/admin/rollouts/current", headers=AUTH)}
        out["no_abort"] = await c.post("/admin/rollouts/current/abort", headers=AUTH)
        for name, body in {
            "unknown": {"version": 9},
            "production": {"version": 1},
            "decreasing": {"version": 2, "steps": [50, 5]},
            "only_100": {"version": 2, "steps": [100]},
            "above_100": {"version": 2, "steps": [5, 150]},
            "samples": {"version": 2, "min_samples": 0},
            "alpha": {"version": 2, "alpha": 1.5},
            "typo": {"version": 2, "stpes": [5]},
            "ok": {"version": 2, "steps": [10, 100], "min_samples": 50, "reason": "try v2"},
            "second": {"version": 3},
        }.items():
            out[name] = await c.post("/admin/rollouts", json=body, headers=AUTH)
        out["current"] = await c.get("/admin/rollouts/current", headers=AUTH)
        return out

    out = _run(three_versions, calls)
    assert out["none"].status_code == 404
    assert out["no_abort"].status_code == 409 and "nothing to abort" in out["no_abort"].text
    assert out["unknown"].status_code == 404 and "no version 9" in out["unknown"].json()["detail"]
    assert out["production"].status_code == 409 and "already production" in out["production"].text
    for bad in ("decreasing", "only_100", "above_100", "samples", "alpha", "typo"):
        assert out[bad].status_code == 422, (bad, out[bad].text)
    assert "steps" in out["decreasing"].json()["detail"]
    assert out["ok"].status_code == 202, out["ok"].text
    ok = out["ok"].json()
    assert ok["status"] == "requested" and ok["steps"] == [10, 100] and ok["min_samples"] == 50
    assert ok["alpha"] == three_versions.rollout.alpha  # the setting, not overridden
    assert ok["requested_by"] == "api-admin"
    # One rollout at a time.
    assert out["second"].status_code == 409 and "abort it first" in out["second"].text
    assert out["current"].json()["rollout_id"] == ok["rollout_id"]
    assert registry_of(three_versions).aliases().canary is None  # requested, not started


def test_api_requested_rollout_is_executed_by_the_controller(three_versions):
    s = three_versions
    registry = registry_of(s)
    src = FixedSource()
    ctl = RolloutController(registry, src, s.rollout)

    async def calls(c, app):
        out = {"request": await c.post("/admin/rollouts", json={"version": 3}, headers=AUTH)}
        out["started"] = await asyncio.to_thread(ctl.step)
        out["running"] = await c.get("/admin/rollouts/current", headers=AUTH)
        src.add("production", 300, 90)
        src.add("canary", 300, 6)  # a much worse canary
        out["decided"] = await asyncio.to_thread(ctl.step)
        out["after"] = await c.get("/admin/rollouts/current", headers=AUTH)
        return out

    out = _run(s, calls)
    rid = out["request"].json()["rollout_id"]
    assert out["started"].kind == STARTED
    running = out["running"].json()
    assert running["status"] == "running" and running["weight"] == 5 and running["applied"]
    assert out["decided"].kind == ROLLED_BACK
    after = out["after"].json()
    assert after["rollout_id"] == rid and after["status"] == "rolled_back"
    assert [d["action"] for d in after["decisions"]] == ["request", "start", "rollback"]
    assert after["decisions"][-1]["evidence"]["canary"]["served"] == 300
    doc = registry.aliases()
    assert doc.canary is None and doc.history[-1].action == "canary_clear"
    assert doc.history[-1].evidence["rollout"]["rollout_id"] == rid


def test_api_abort_clears_the_canary_even_without_a_controller(three_versions):
    s = three_versions
    registry = registry_of(s)
    src = FixedSource()
    ctl = RolloutController(registry, src, s.rollout)

    async def calls(c, app):
        out = {"request": await c.post("/admin/rollouts", json={"version": 2}, headers=AUTH)}
        out["started"] = await asyncio.to_thread(ctl.step)
        src.add("production", 100, 20)
        src.add("canary", 100, 20)
        out["advanced"] = await asyncio.to_thread(ctl.step)
        # The controller is gone from here on: the abort alone must stop the canary.
        out["abort"] = await c.post(
            "/admin/rollouts/current/abort", json={"reason": "pager went off"}, headers=AUTH
        )
        await app.state.ctx.models.poll_once()
        out["served"] = await c.get("/recommend/someone")
        out["again"] = await c.post("/admin/rollouts/current/abort", headers=AUTH)
        return out

    out = _run(s, calls)
    assert out["started"].kind == STARTED and out["advanced"].kind == ADVANCED
    assert out["abort"].status_code == 200, out["abort"].text
    aborted = out["abort"].json()
    assert aborted["status"] == "aborted" and aborted["weight"] == 0 and aborted["applied"]
    assert aborted["decisions"][-1]["reason"] == "pager went off"
    doc = registry.aliases()
    assert doc.canary is None
    last = doc.history[-1]
    assert last.action == "canary_clear" and last.actor == "api-admin"
    assert last.weight == 50 and last.reason == "pager went off"
    assert out["served"].json()["variant"] == "production"
    assert out["again"].status_code == 409
    # A controller that comes back later does not resurrect it.
    assert ctl.step().kind == "aborted" and registry.aliases().canary is None


def test_cli_and_api_see_the_same_rollout(three_versions):
    s = three_versions
    env = ApiService(s).environment()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streamrec", "rollout", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    started = cli("start", "reco", "2", "--steps", "20,100", "--no-wait")
    assert started.returncode == 0, started.stderr
    bad = cli("start", "reco", "3", "--steps", "50,5")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    async def calls(c, app):
        return await c.get("/admin/rollouts/current", headers=AUTH)

    current = _run(s, calls).json()
    assert current["status"] == "requested" and current["steps"] == [20, 100]
    assert current["requested_by"] == "cli"
    status = cli("status", "reco")
    assert status.returncode == 0, status.stderr
    assert current["rollout_id"] in status.stdout and "requested" in status.stdout

    async def abort(c, app):
        return await c.post("/admin/rollouts/current/abort", json={"reason": "no"}, headers=AUTH)

    assert _run(s, abort).json()["status"] == "aborted"
    status = cli("status", "reco")
    assert "aborted" in status.stdout and current["rollout_id"] in status.stdout
    again = cli("abort", "reco")
    assert again.returncode == 1 and "nothing to abort" in again.stdout
    assert RolloutController(registry_of(s), FixedSource(), s.rollout).status().kind != IDLE
