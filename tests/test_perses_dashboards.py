"""The Perses dashboards we ship (infra/perses/dashboards/) are the Grafana ones we publish,
converted by Perses' own Grafana migration (`percli migrate`, v0.49.0): the files are what
the generator writes now, and nothing was lost on the way (every panel, every query, no
panel turned into the migration's "not supported" placeholder). Perses loading them and
running every query is tests/test_observability_live.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "infra" / "grafana" / "dashboards"
PERSES = ROOT / "infra" / "perses" / "dashboards"
BOARDS = sorted(p.name for p in GRAFANA.glob("*.json"))
UNSUPPORTED = "Migration from Grafana not supported"


def _generator():
    spec = importlib.util.spec_from_file_location("perses_generate", PERSES.parent / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perses_queries(board: dict) -> list[str]:
    """The PromQL of every panel of a Perses dashboard, in panel order."""
    return [
        query["spec"]["plugin"]["spec"]["query"]
        for panel in board["spec"]["panels"].values()
        for query in panel["spec"].get("queries", [])
    ]


# perses_home builds perses/percli on a fresh machine (8-11 min on 2 cores): not counted in
# the 600 s a test may take.
@pytest.mark.integration
@pytest.mark.timeout(600, func_only=True)
def test_shipped_dashboards_are_what_percli_migrate_writes(perses_home: Path) -> None:
    assert _generator().main(["--check"]) == 0, "run `python infra/perses/generate.py`"


def test_there_is_one_perses_dashboard_per_grafana_dashboard() -> None:
    assert BOARDS and sorted(p.name for p in PERSES.glob("*.json")) == BOARDS


@pytest.mark.parametrize("name", BOARDS)
def test_every_panel_and_query_survived_the_migration(name: str) -> None:
    grafana = json.loads((GRAFANA / name).read_text())
    perses = json.loads((PERSES / name).read_text())
    assert perses["kind"] == "Dashboard"
    assert perses["metadata"] == {**perses["metadata"], "name": grafana["uid"]}
    assert perses["metadata"]["project"] == "streamrec"
    panels = [p for p in grafana["panels"] if p["type"] != "row"]
    assert len(perses["spec"]["panels"]) == len(panels)
    placeholders = [
        key for key, panel in perses["spec"]["panels"].items() if UNSUPPORTED in json.dumps(panel)
    ]
    assert not placeholders, f"panels the migration could not convert: {placeholders}"
    # Nor a variable: the data-source picker it turns into "grafana migration not supported"
    # is dropped by PersesService.migrate.
    assert "supported" not in json.dumps(perses["spec"]["variables"])
    kinds = {p["spec"]["plugin"]["kind"] for p in perses["spec"]["panels"].values()}
    assert "TimeSeriesChart" in kinds and "Markdown" not in kinds
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert perses_queries(perses) == exprs


@pytest.mark.integration
@pytest.mark.timeout(600, func_only=True)
def test_stack_up_serves_every_dashboard_and_down_stops_it(
    perses_home: Path, tmp_path: Path
) -> None:
    """`stack up --service perses` on a private port and data dir: provisioned and ready
    when `up` returns (project, datasource, every dashboard), stopped by `down`."""
    from core.config import Settings
    from streamrec import stack
    from streamrec.stack.perses import DATASOURCE, PersesService
    from tests.support.ports import free_port

    s = Settings(data_dir=tmp_path / "data").with_sections(
        observability={"perses_port": free_port()}
    )
    try:
        (state,) = stack.up(s, ["perses"])
        assert state.state == "started"
        perses = PersesService(s)
        names = sorted(b["metadata"]["name"] for b in perses.dashboards())
        assert names == sorted(json.loads((GRAFANA / n).read_text())["uid"] for n in BOARDS)
        (source,) = perses.get("/api/v1/globaldatasources")
        assert source["metadata"]["name"] == DATASOURCE
        proxy = source["spec"]["plugin"]["spec"]["proxy"]["spec"]["url"]
        assert proxy == f"http://127.0.0.1:{s.observability.prometheus_port}"
    finally:
        (state,) = stack.down(s, ["perses"])
    assert state.state == "stopped" and state.pid is not None
