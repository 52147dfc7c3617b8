"""The streamrec Grafana dashboards as code: ``panels`` holds the builders, one module per
dashboard (``board_*``) holds its panels, and :func:`dashboards` maps file name -> JSON.
``infra/grafana/generate.py`` writes (or ``--check``\\s) them."""

from __future__ import annotations

from typing import Any

from . import board_api, board_kafka, board_models, board_streams


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        "streamrec-api.json": board_api.build(),
        "streamrec-streams.json": board_streams.build(),
        "streamrec-models.json": board_models.build(),
        "streamrec-kafka.json": board_kafka.build(),
    }


__all__ = ["dashboards"]
