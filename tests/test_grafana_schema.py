"""The dashboards against Grafana's own dashboard schema.

No Grafana server can run here (see the README: it is not built from the Go module proxy),
so the JSON is checked against the schema models of ``grafana-foundation-sdk`` (pinned for
Grafana 11.2, the version docker-compose runs), which are generated from the CUE schemas
Grafana itself validates dashboards with: every key we write must be a field of the
dashboard, panel, panel-plugin options or Prometheus query schema (parsing into the models
and writing back loses nothing), and every value must have the type and, for enums, one of
the values the schema declares.
"""

from __future__ import annotations

import copy
import enum
import json
import types
import typing
from pathlib import Path

import pytest

sdk = pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[dev]'")
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.cog.plugins import register_default_plugins  # noqa: E402
from grafana_foundation_sdk.cog.runtime import UnknownDataquery  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

DASHBOARDS = Path(__file__).resolve().parent.parent / "infra" / "grafana" / "dashboards"
BOARDS = sorted(p.name for p in DASHBOARDS.glob("*.json"))


def _lost(ours: object, theirs: object, path: str = "") -> list[str]:
    """Where ``theirs`` (the round-tripped JSON) lacks or changed something of ``ours``."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{path}: became {type(theirs).__name__}"]
        out = []
        for key, value in ours.items():
            if key not in theirs:
                out.append(f"{path}/{key}: not in the schema")
            else:
                out += _lost(value, theirs[key], f"{path}/{key}")
        return out
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [f"{path}: list changed"]
        return [
            e
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for e in _lost(a, b, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [f"{path}: {ours!r} became {theirs!r}"]


def _type_errors(value: object, hint: object, path: str) -> list[str]:
    """Where ``value`` does not have the type ``hint`` the schema model declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        tried = [_type_errors(value, a, path) for a in args]
        return [] if any(not t for t in tried) else min(tried, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        return [e for i, v in enumerate(value) for e in _type_errors(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object"]
        return [e for k, v in value.items() for e in _type_errors(v, args[1], f"{path}/{k}")]
    if hint in (typing.Any, object):
        return _model_errors(value, path) if hasattr(value, "to_json") else []
    if hint is type(None):
        return [] if value is None else [f"{path}: {value!r} where the schema has null"]
    if value is None:  # a required field left unset
        return [f"{path}: missing"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = {m.value for m in hint}
        raw = value.value if isinstance(value, enum.Enum) else value
        return [] if raw in allowed else [f"{path}: {value!r} not one of {sorted(allowed)}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if hint in (int, float):
        ok = isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not a {hint.__name__}"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if isinstance(hint, type):
        if not isinstance(value, hint):
            return [f"{path}: {type(value).__name__} where the schema has {hint.__name__}"]
        return _model_errors(value, path)
    return []


def _model_errors(obj: object, path: str) -> list[str]:
    if isinstance(obj, UnknownDataquery):  # a query of no known data source type
        return [f"{path}: query of an unknown data source type"]
    hints = typing.get_type_hints(type(obj))
    return [
        e
        for name, hint in hints.items()
        for e in _type_errors(getattr(obj, name), hint, f"{path}.{name}")
    ]


def schema_problems(board: dict) -> list[str]:
    register_default_plugins()  # panel options and queries parse into their plugin's models
    model = Dashboard.from_json(copy.deepcopy(board))
    back = json.loads(json.dumps(model, cls=JSONEncoder))
    return _lost(board, back) + _model_errors(model, "dashboard")


@pytest.mark.parametrize("name", BOARDS)
def test_dashboard_matches_the_grafana_schema(name: str) -> None:
    board = json.loads((DASHBOARDS / name).read_text())
    problems = schema_problems(board)
    assert not problems, "\n".join(problems)
    # What we assert the files to be really got parsed: typed panels and Prometheus queries.
    model = Dashboard.from_json(board)
    kinds = {
        type(p.options).__module__.rsplit(".", 1)[-1] for p in model.panels if p.type_val != "row"
    }
    assert kinds <= {"timeseries", "stat", "bargauge"} and "timeseries" in kinds
    queries = [t for p in model.panels if p.type_val != "row" for t in p.targets]
    assert queries and all(type(q).__module__.endswith(".prometheus") for q in queries)


def test_the_schema_check_catches_what_grafana_would_ignore_or_reject() -> None:
    board = json.loads((DASHBOARDS / "streamrec-models.json").read_text())
    assert schema_problems(board) == []
    gauge = next(p for p in board["panels"] if p["type"] == "bargauge")
    series = next(p for p in board["panels"] if p["type"] == "timeseries")

    bad = copy.deepcopy(board)
    bad["refreshEvery"] = "30s"  # a misspelt dashboard field
    assert any("refreshEvery: not in the schema" in e for e in schema_problems(bad))

    bad = copy.deepcopy(board)
    next(p for p in bad["panels"] if p["id"] == gauge["id"])["options"]["legend"] = {}
    assert any("options/legend: not in the schema" in e for e in schema_problems(bad))

    bad = copy.deepcopy(board)
    custom = next(p for p in bad["panels"] if p["id"] == series["id"])["fieldConfig"]
    custom["defaults"]["custom"]["drawStyle"] = "lines"  # the enum says "line"
    assert any("drawStyle" in e or "draw_style" in e for e in schema_problems(bad))

    bad = copy.deepcopy(board)
    bad["graphTooltip"] = "shared"  # an enum of 0, 1, 2
    assert any("graph_tooltip" in e for e in schema_problems(bad))

    bad = copy.deepcopy(board)
    next(p for p in bad["panels"] if p["id"] == series["id"])["targets"][0]["expr"] = 42
    assert any(".expr: 42 is not a string" in e for e in schema_problems(bad))


@pytest.mark.parametrize("name", BOARDS)
def test_every_legend_lists_its_calcs(name: str) -> None:
    """Grafana's export writes ``legend.calcs`` even when empty, and Perses' Grafana migration
    rejects a legend without it (``legend.values: undefined field: calcs``)."""
    board = json.loads((DASHBOARDS / name).read_text())
    legends = [p["options"]["legend"] for p in board["panels"] if p["type"] == "timeseries"]
    assert legends and all(legend.get("calcs") == [] for legend in legends)
