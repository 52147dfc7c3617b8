"""``streamrec serve`` through Redis outages of its own redis-server (never the shared one):
an outage leaves no "Task exception was never retrieved" in the log, even when requests give
up before a reconnect fails, and the first /readyz once Redis is back answers 200."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from tests.support.serving import (
    free_port,
    live_server,
    publish,
    serving_settings,
    throwaway_redis,
    trained,
)

pytestmark = pytest.mark.integration

UNRETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")


def test_first_readyz_after_a_redis_restart_is_200(topics: Settings, tmp_path: Path) -> None:
    port = free_port()
    s = serving_settings(topics, redis={"url": f"redis://127.0.0.1:{port}/0"})
    publish(s, trained(str(s.cache_path)).model)
    with (
        throwaway_redis(tmp_path / "before", port) as (first, _),
        live_server(s, tmp_path) as api,
        httpx.Client(base_url=api.url, timeout=30) as c,
    ):
        assert c.get("/readyz").status_code == 200  # the pool now holds a connection
        first.kill()
        first.wait(5)
        during = c.get("/recommend/1?k=3")  # no /readyz during the outage
        with throwaway_redis(tmp_path / "after", port):
            ready = c.get("/readyz")
            again = c.get("/recommend/1?k=3")
    assert during.status_code == 200 and during.json()["fallback_reason"] == "redis_unavailable"
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["redis"] == "ok"
    assert again.json()["variant"] == "production"


def test_a_redis_outage_leaves_no_unretrieved_task_exception(
    topics: Settings, tmp_path: Path
) -> None:
    # Database 1: every (re)connect of the request path's reader sends SELECT first, so a
    # redis-server that accepts connections but does not answer (SIGSTOP) holds the connect
    # for its whole timeout (1 s), far past the 200 ms budget the requests wait for it.
    port = free_port()
    s = serving_settings(
        topics, redis={"url": f"redis://127.0.0.1:{port}/1"}, serve={"budget_ms": 200.0}
    )
    publish(s, trained(str(s.cache_path)).model)
    with (
        throwaway_redis(tmp_path / "before", port) as (first, _),
        live_server(s, tmp_path) as api,
        httpx.Client(base_url=api.url, timeout=30) as c,
    ):
        assert c.get("/recommend/1?k=3").status_code == 200
        first.kill()  # the reader's connection is lost...
        first.wait(5)
        with throwaway_redis(tmp_path / "hung", port) as (hung, _):
            os.kill(hung.pid, signal.SIGSTOP)  # ...and the server it reconnects to hangs
            try:
                during = []
                for _ in range(6):  # each round outlives one failed connect
                    during += [c.get(f"/recommend/{u}?k=3") for u in (1, 2, 3)]
                    time.sleep(1.2)
            finally:
                os.kill(hung.pid, signal.SIGCONT)
            deadline = time.monotonic() + 20
            while c.get("/recommend/1?k=3").json()["fallback_reason"] == "redis_unavailable":
                assert time.monotonic() < deadline, "never recovered"
                time.sleep(0.3)
    log = api.output()
    assert all(r.status_code == 200 for r in during)
    assert {r.json()["fallback_reason"] for r in during} == {"redis_unavailable"}
    for message in UNRETRIEVED:
        assert message not in log, log[-3000:]
