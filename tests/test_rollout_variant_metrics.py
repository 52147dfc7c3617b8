"""Request metrics carry the variant a user was *assigned* apart from what answered, so the
controller charges a canary's timeouts and failures to the canary: a canary that times out
(answered by the fallback, 200 for the user) is judged worse than production."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from models.random_model import RandomModel
from rollout.decision import ArmStats, Thresholds, evaluate
from rollout.live_source import parse_requests
from serving import create_app
from serving.metrics import answer_labels
from serving.routing import canary_bucket
from tests.support.serving import publish, registry_of, running_client, serving_settings

ITEMS = [f"i{j}" for j in range(30)]
ROLLOUT_ID = "slow-canary"


def test_answer_labels_say_who_answered_the_assigned_user():
    assert answer_labels(("canary", 2), "canary", None) == ("model", "none")
    assert answer_labels(("canary", 2), "fallback", "timeout") == ("fallback", "timeout")
    # A canary that could not be loaded: production stood in, still the canary's failure.
    assert answer_labels(("canary", 2), "production", None) == ("production", "none")
    assert answer_labels(None, "fallback", "no_model") == ("fallback", "no_model")


def test_parse_requests_charges_failures_to_the_assigned_variant():
    text = "\n".join(
        [
            "# TYPE streamrec_serving_recommend_seconds histogram",
            *(
                f'streamrec_serving_recommend_seconds_count{{assigned_variant="{v}",'
                f'assigned_version="{ver}",answered_by="{by}",fallback_reason="{r}",'
                f'status="{st}"}} {n}'
                for v, ver, by, r, st, n in [
                    ("canary", 2, "model", "none", 200, 90),
                    ("canary", 2, "fallback", "timeout", 200, 5),
                    ("canary", 2, "production", "none", 200, 3),
                    ("canary", 2, "fallback", "unknown_user", 200, 7),  # not its fault
                    ("canary", 2, "none", "none", 500, 2),
                    ("production", 1, "model", "none", 200, 100),
                    ("production", 1, "fallback", "redis_unavailable", 200, 4),
                ]
            ),
        ]
    )
    canary, prod = parse_requests(text, "canary", 2), parse_requests(text, "production", 1)
    assert (canary.requests, canary.errors, canary.timeouts, canary.degraded) == (107, 2, 5, 3)
    assert canary.error_ratio == pytest.approx(10 / 107)
    assert (prod.requests, prod.failures) == (104, 0)
    assert parse_requests(text, "canary", 3).requests == 0  # another version's canary


@pytest.mark.integration
def test_a_canary_that_times_out_is_judged_worse(topics):
    s = serving_settings(topics, serve={"budget_ms": 300.0})
    publish(s, RandomModel(ITEMS, seed=1))  # production v1
    canary_version = publish(s, RandomModel(ITEMS, seed=2), promote=False)
    registry_of(s).set_canary(canary_version, 50, rollout_id=ROLLOUT_ID, reason="test")
    users = [f"u{n}" for n in range(24)]
    n_canary = sum(canary_bucket(u, ROLLOUT_ID) < 50 for u in users)
    assert 0 < n_canary < len(users)
    app = create_app(s)
    finished = threading.Event()

    async def go():
        async with running_client(app) as c:
            models = app.state.ctx.models
            await models.poll_once()
            slow = await models.get(canary_version)
            fast_recommend = slow.recommend

            def too_slow(*args, **kwargs):
                # Over the 300 ms budget; signals when done so the next request does not
                # queue behind it on the model thread pool.
                time.sleep(0.6)
                finished.set()
                return fast_recommend(*args, **kwargs)

            slow.recommend = too_slow
            bodies = []
            for user in users:
                resp = await c.get(f"/recommend/{user}")
                assert resp.status_code == 200, resp.text
                bodies.append(resp.json())
                if canary_bucket(user, ROLLOUT_ID) < 50:
                    await asyncio.to_thread(finished.wait, 10)
                    finished.clear()
            return bodies, (await c.get("/metrics")).text

    bodies, text = asyncio.run(go())
    # Users only ever see production or the fallback: the slow canary never answered.
    timed_out = [b for b in bodies if b["fallback_reason"] == "timeout"]
    assert len(timed_out) >= n_canary and all(b["variant"] != "canary" for b in bodies)
    canary = parse_requests(text, "canary", canary_version)
    production = parse_requests(text, "production", 1)
    assert canary.requests == n_canary and canary.timeouts == n_canary
    assert production.requests == len(users) - n_canary
    assert production.error_ratio < 0.5  # a loaded host may time out a few; not all
    # Conversion alike: only the timeouts separate them, and they decide.
    verdict = evaluate(
        ArmStats(200, 40, canary.requests, canary.errors, canary.latency_buckets, canary.timeouts),
        ArmStats(200, 40, production.requests, production.errors, production.latency_buckets),
        Thresholds(p99_slack_ms=10_000),  # only the error ratio in question here
    )
    assert not verdict.passed and "error ratio" in verdict.reasons[0]
    assert verdict.evidence["canary"]["timeouts"] == n_canary
