"""Builders of the dashboard JSON: targets, panels, rows, the grid layout and the dashboard.

Plain dicts rather than a dashboard SDK: the JSON stays exactly what Grafana's own "Export"
writes, with nothing to install to generate it (tests/test_grafana_schema.py checks every
file against the Grafana schema models of grafana-foundation-sdk). Every panel uses the
dashboard's ``datasource`` variable, whose default is the provisioned data source (uid
``prometheus``), so the same files work when provisioned and when imported into a Grafana
with another Prometheus.
"""

from __future__ import annotations

import json
from typing import Any

DATASOURCE_UID = "prometheus"  # = provisioning/datasources/prometheus.yml
SCHEMA_VERSION = 39  # Grafana 11.x (docker-compose runs 11.2)
DS = {"type": "prometheus", "uid": "${datasource}"}
W = "$__rate_interval"  # the rate window Grafana derives from the scrape interval
RECO = 'endpoint="/recommend/{user_id}"'


def target(expr: str, legend: str = "__auto") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric: str, by: str, selector: str = "", qs=(0.5, 0.95, 0.99)) -> list[dict]:
    sel = f"{{{selector}}}" if selector else ""
    group = f"{by}, le" if by else "le"
    return [
        target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel}[{W}])))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in qs
    ]


def _options(kind: str) -> dict[str, Any]:
    """The panel plugin's own options: each kind has its own set in Grafana's schema."""
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if kind == "stat":
        return {
            "reduceOptions": reduce,
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    if kind == "bargauge":
        # No legend or tooltip here: bar gauges have neither (Grafana ignores them).
        return {
            "reduceOptions": reduce,
            "displayMode": "basic",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    return {
        "tooltip": {"mode": "multi", "sort": "desc"},
        # "calcs" is required by Grafana's schema (its export writes it, even empty) and
        # by Perses' Grafana migration, which rejects a legend without it.
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
    }


def panel(
    title: str,
    targets: list[dict],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stack: bool = False,
) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": _options(kind),
        "targets": targets,
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {}}


def layout(items: list[dict]) -> list[dict]:
    """Ids, refIds and grid positions: panels flow left to right, rows span the width."""
    x = y = line_h = 0
    out = []
    for n, item in enumerate(items, start=1):
        item = {"id": n, **item}
        if item["type"] == "row":
            y += line_h
            item["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
            x, y, line_h = 0, y + 1, 0
        else:
            w, h = item["gridPos"]["w"], item["gridPos"]["h"]
            if x + w > 24:
                x, y, line_h = 0, y + line_h, 0
            item["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
            x, line_h = x + w, max(line_h, h)
            item["targets"] = [
                {"refId": chr(ord("A") + i), "datasource": DS, "range": True, **t}
                for i, t in enumerate(item["targets"])
            ]
        out.append(item)
    return out


def dashboard(uid: str, title: str, description: str, items: list[dict]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["streamrec"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,  # shared crosshair: line panels up by time
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["streamrec"],
                "asDropdown": True,
                "title": "streamrec",
                "url": "",  # required by the schema, unused by a "dashboards" link
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": DATASOURCE_UID},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": layout(items),
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"
