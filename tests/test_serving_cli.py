"""``streamrec serve`` as a user runs it: a real uvicorn process (two workers) on the real
stack, answering over TCP; bad options fail in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from tests.support.serving import free_port, publish, serving_settings, trained

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def _env(s: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMREC_TOPIC_PREFIX": s.kafka.topic_prefix,
        "STREAMREC_REDIS_KEY_PREFIX": s.redis.key_prefix,
        "STREAMREC_STORAGE_URL": s.storage.location,
        **extra,
    }


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve never became ready")


def test_serve_runs_workers_and_stops_cleanly(topics: Settings) -> None:
    s = serving_settings(topics)
    publish(s, trained(str(s.cache_path)).model)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrec", "serve", "--port", str(port), "--workers", "2"],
        cwd=REPO,
        env=_env(s, STREAMREC_SERVE_BUDGET_MS="5000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        text = httpx.get(f"{url}/recommend/1?k=5", headers={"Accept": "text/plain"}).text
        bodies = [httpx.get(f"{url}/recommend/{u}?k=5").json() for u in range(1, 21)]
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert len(text.split(",")) == 5 and " " not in text
    assert all(b["variant"] == "production" for b in bodies)
    # Two workers write metrics to a shared directory; /metrics merges both.
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("streamrec_serving_request_seconds_count")
        and 'endpoint="/recommend/{user_id}"' in line
        and 'variant="production"' in line
    )
    assert count == 21.0
    assert b"stopped after" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port: "),
        (["--workers", "0"], "--workers: "),
        (["--budget-ms", "-1"], "--budget-ms: "),
    ],
)
def test_bad_options_fail_in_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", "serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
