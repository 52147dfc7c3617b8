"""No cold fallbacks: ``streamrec serve`` warms each model before ``/readyz`` says ready and
before adopting a promoted version, so neither the first requests nor those right after a
promote fall back with ``timeout`` under the default 50 ms budget. Counted from the answers
and the fallback metric, never timed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from core.config import Settings
from tests.support.serving import (
    live_server,
    publish,
    serving_settings,
    trained,
    write_history,
)

# alone: it counts answers over the 50 ms budget, which a test busy on the other core of
# `make test`'s two processes would decide, not the warm-up.
pytestmark = [pytest.mark.integration, pytest.mark.alone]

TOKEN = "warm-up-test-token"


def _timeouts_metric(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("streamrec_serving_fallbacks_total") and 'reason="timeout"' in line:
            return float(line.split()[-1])
    return 0.0


def test_no_timeout_fallbacks_after_ready_and_right_after_a_promote(
    topics: Settings, tmp_path: Path
) -> None:
    s = serving_settings(topics, serve={"budget_ms": 50.0})
    model = trained(str(s.cache_path)).model
    publish(s, model)
    users = model.als.user_ids[:100].tolist()
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    items = model.als.item_ids.tolist()
    for n, user in enumerate(users[::2]):  # half of them with fresh history: the fold-in path
        write_history(r, s, user, items[n : n + 10])
    write_history(r, s, "brand-new", items[:5])
    users.append("brand-new")
    env = {"STREAMREC_SERVE_ADMIN_TOKEN": TOKEN, "STREAMREC_SERVE_BUDGET_MS": "50"}
    with (
        live_server(s, tmp_path, **env) as api,
        httpx.Client(base_url=api.url, timeout=10) as c,
    ):
        first = [c.get(f"/recommend/{users[n % len(users)]}").json() for n in range(200)]
        assert [b["fallback_reason"] for b in first].count("timeout") == 0
        assert sum(b["variant"] == "production" for b in first) >= 190
        v2 = publish(s, model, promote=False)
        promoted = c.post(
            "/admin/promote",
            json={"version": v2, "reason": "warm-up test"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert promoted.status_code == 200, promoted.text
        # Every answer from the promote on, until 200 came from the new version.
        after: list[dict] = []
        deadline = time.monotonic() + 60
        while sum(b["model_version"] == v2 for b in after) < 200:
            assert time.monotonic() < deadline, "the promoted version was never adopted"
            after.append(c.get(f"/recommend/{users[len(after) % len(users)]}").json())
        assert [b["fallback_reason"] for b in after].count("timeout") == 0
        assert _timeouts_metric(c) == 0
