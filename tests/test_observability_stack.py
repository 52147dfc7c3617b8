"""``streamrec stack up --service alertmanager --service prometheus`` on ports of its own:
Prometheus with the repo's rules and the Redis exporter beside it come up, scrape, send alerts to
the Alertmanager, and ``down`` stops all three."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from streamrec.stack.base import port_open
from tests.support.ports import free_ports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("prometheus_bins", "alertmanager_bins"),
]


def test_stack_up_starts_prometheus_with_rules_and_redis_exporter(
    stack: Settings, tmp_path: Path
) -> None:
    prom_port, exporter_port, am_port = free_ports(3)
    s = stack.model_copy(update={"data_dir": tmp_path / "data"}).with_sections(
        observability={"prometheus_port": prom_port, "redis_exporter_port": exporter_port},
        alertmanager={"port": am_port},
    )
    from streamrec import stack as stack_module  # the `stack` fixture shadows the name

    try:
        (manager, state) = stack_module.up(s, ["alertmanager", "prometheus"], timeout=60)
        assert (manager.name, manager.state, state.state) == ("alertmanager", "started", "started")
        assert (tmp_path / "data" / "alertmanager").is_dir()
        url = f"http://127.0.0.1:{prom_port}"
        rules = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        assert "StreamrecApiFallbackRatioHigh" in names and "StreamrecProcessDown" in names

        def health() -> dict[str, str]:
            active = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]
            return {t["labels"]["job"]: t["health"] for t in active["activeTargets"]}

        deadline = time.monotonic() + 60
        while health().get("redis") != "up" or health().get("kafka") != "up":
            assert time.monotonic() < deadline, health()
            time.sleep(1)

        # Prometheus sends its alerts to the Alertmanager on the configured port.
        def managers() -> list[str]:
            found = httpx.get(f"{url}/api/v1/alertmanagers", timeout=10).json()["data"]
            return [m["url"] for m in found["activeAlertmanagers"]]

        while not managers():
            assert time.monotonic() < deadline, "Prometheus found no Alertmanager"
            time.sleep(0.5)
        assert managers() == [f"http://127.0.0.1:{am_port}/api/v2/alerts"]
        scraped = httpx.get(f"{url}/api/v1/query", params={"query": "redis_up"}, timeout=10).json()[
            "data"
        ]["result"]
        assert scraped and scraped[0]["value"][1] == "1"
        # Idempotent: a second `up` starts nothing.
        (again,) = stack_module.up(s, ["prometheus"], timeout=60)
        assert again.state == "running" and again.pid == state.pid
        (status,) = stack_module.status(s, ["alertmanager"])
        assert (status.state, status.port) == ("running", am_port)
    finally:
        down = stack_module.down(s, ["alertmanager", "prometheus"])
    assert {st.state for st in down} == {"stopped"}
    assert not port_open(prom_port) and not port_open(exporter_port) and not port_open(am_port)
