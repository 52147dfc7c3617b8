"""A private Perses server for the live observability test: started by the stack's own
:class:`PersesService` (on a free port, its files under the test's data dir, its datasource a
proxy to the test's Prometheus), with the checks of what it loaded and the panel queries run
through its datasource proxy."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from core.config import Settings
from streamrec.stack.perses import DATASOURCE, PROJECT, PersesService
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana" / "dashboards"
UNSUPPORTED = "Migration from Grafana not supported"


@contextlib.contextmanager
def perses_server(settings: Settings, prometheus_port: int) -> Iterator[PersesService]:
    """Perses started (not yet waited for: the caller waits once Prometheus is up), stopped
    on exit. ``settings`` must have a private ``data_dir``."""
    perses = PersesService(
        settings.with_sections(
            observability={"perses_port": free_port(), "prometheus_port": prometheus_port}
        )
    )
    perses.start()
    try:
        yield perses
    finally:
        perses.stop(timeout=10)


def check_dashboards(perses: PersesService) -> list[dict]:
    """Every Grafana dashboard we publish is listed by Perses with all its panels, none of
    them the migration's placeholder; a broken dashboard is refused with a 400. Returns the
    dashboards as Perses serves them."""
    listed = {board["metadata"]["name"]: board for board in perses.dashboards()}
    for path in sorted(GRAFANA.glob("*.json")):
        grafana = json.loads(path.read_text())
        board = listed.get(grafana["uid"])
        assert board is not None, f"{grafana['uid']} not listed by Perses: {sorted(listed)}"
        panels = board["spec"]["panels"]
        assert len(panels) == sum(p["type"] != "row" for p in grafana["panels"]), path.name
        placeholders = [k for k, p in panels.items() if UNSUPPORTED in json.dumps(p)]
        assert not placeholders, f"{path.name}: not migrated: {placeholders}"

    # A panel whose legend sits nowhere Perses knows: the server's CUE schemas refuse it.
    broken = copy.deepcopy(next(iter(listed.values())))
    broken["metadata"] = {"name": "broken-on-purpose", "project": PROJECT}
    chart = next(p for p in broken["spec"]["panels"].values() if "legend" in json.dumps(p))
    chart["spec"]["plugin"]["spec"]["legend"]["position"] = "nowhere"
    resp = httpx.post(f"{perses.url}/api/v1/projects/{PROJECT}/dashboards", json=broken, timeout=30)
    assert resp.status_code == 400, (resp.status_code, resp.text[:500])
    assert "spec.legend.position" in resp.json()["message"]  # refused by the panel's schema
    assert "broken-on-purpose" not in {b["metadata"]["name"] for b in perses.dashboards()}
    return list(listed.values())


def panel_queries(boards: list[dict], rate_interval: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) of every query of every panel, as Perses holds them, with
    ``$__rate_interval`` replaced as the browser would."""
    out = []
    for board in sorted(boards, key=lambda b: b["metadata"]["name"]):
        for panel in board["spec"]["panels"].values():
            for query in panel["spec"].get("queries", []):
                expr = query["spec"]["plugin"]["spec"]["query"]
                title = panel["spec"]["display"]["name"]
                out.append(
                    (
                        board["metadata"]["name"],
                        title,
                        expr.replace("$__rate_interval", rate_interval),
                    )
                )
    return out


def series(perses: PersesService, expr: str, start: float) -> list:
    """A range query through Perses' proxy to the Prometheus global datasource."""
    resp = httpx.get(
        f"{perses.url}/proxy/globaldatasources/{DATASOURCE}/api/v1/query_range",
        params={"query": expr, "start": start, "end": time.time(), "step": 1},
        timeout=30,
    )
    body = resp.json()
    assert body.get("status") == "success", (expr, resp.status_code, body)
    return body["data"]["result"]
