"""Generate the Grafana dashboards of infra/grafana/dashboards/ from one place.

    python infra/grafana/generate.py          # rewrite the JSON files
    python infra/grafana/generate.py --check  # exit 1 if a file differs (CI, tests)

Plain dicts rather than a dashboard SDK: the JSON stays exactly what Grafana's own "Export"
writes, with nothing to install. Every panel uses the dashboard's ``datasource`` variable,
whose default is the provisioned data source (uid ``prometheus``), so the same files work
when provisioned and when imported into a Grafana with another Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "prometheus"  # = provisioning/datasources/prometheus.yml
SCHEMA_VERSION = 39  # Grafana 11.x (docker-compose runs 11.2)
DS = {"type": "prometheus", "uid": "${datasource}"}
W = "$__rate_interval"  # the rate window Grafana derives from the scrape interval
RECO = 'endpoint="/recommend/{user_id}"'

# Metric names the rollout controller (issue 7) will define; panels on them stay empty
# until it runs (tests/test_observability_live.py lists them as such).
ROLLOUT_CONVERSIONS = "streamrec_rollout_conversions_total"
ROLLOUT_IMPRESSIONS = "streamrec_rollout_impressions_total"


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
    options: dict[str, Any] = {
        "tooltip": {"mode": "multi", "sort": "desc"},
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    }
    if kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": options,
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
            {"type": "dashboards", "tags": ["streamrec"], "asDropdown": True, "title": "streamrec"}
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


def api() -> dict[str, Any]:
    count = "streamrec_serving_request_seconds_count"
    errors_5xx = f'sum(rate({count}{{status=~"5.."}}[{W}])) or vector(0)'
    outage_fallbacks = (
        f'sum(rate(streamrec_serving_fallbacks_total{{reason!="unknown_user"}}[{W}])) or vector(0)'
    )
    hits, misses = (
        "streamrec_serving_model_cache_hits_total",
        "streamrec_serving_model_cache_misses_total",
    )
    return dashboard(
        "streamrec-api",
        "streamrec / API",
        "The recommendation API: traffic, latency by variant, errors, fallbacks, model cache.",
        [
            row("Traffic"),
            panel(
                "Requests/s by endpoint and status",
                [
                    target(
                        f"sum by (endpoint, status) (rate({count}[{W}]))", "{{endpoint}} {{status}}"
                    )
                ],
                unit="reqps",
            ),
            panel(
                "/recommend requests/s by variant",
                [target(f"sum by (variant) (rate({count}{{{RECO}}}[{W}]))", "{{variant}}")],
                unit="reqps",
                stack=True,
                description="production, canary, or fallback (popularity).",
            ),
            row("Latency"),
            panel(
                "/recommend latency by variant",
                quantiles("streamrec_serving_request_seconds", "variant", RECO),
                unit="s",
                description="The model path has a 50 ms budget (STREAMREC_SERVE_BUDGET_MS).",
            ),
            panel(
                "/recommend p99 by model version",
                quantiles("streamrec_serving_request_seconds", "model_version", RECO, (0.99,)),
                unit="s",
            ),
            row("Errors and fallbacks"),
            panel(
                "Server error ratio (5xx)",
                [target(f"({errors_5xx}) / sum(rate({count}[{W}]))", "5xx ratio")],
                unit="percentunit",
                description="Alert StreamrecApiErrorRatioHigh above 1%.",
                width=8,
            ),
            panel(
                "Client errors/s (4xx) by endpoint",
                [
                    target(
                        f'sum by (endpoint, status) (rate({count}{{status=~"4.."}}[{W}]))',
                        "{{endpoint}} {{status}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Outage fallback ratio",
                [
                    target(
                        f'({outage_fallbacks}) / sum(rate({count}{{{RECO},status=~"2.."}}[{W}]))',
                        "fallback ratio (excl. unknown users)",
                    )
                ],
                unit="percentunit",
                description="Fallbacks for any reason but unknown_user, over /recommend "
                "answers. Alert StreamrecApiFallbackRatioHigh above 5%.",
                width=8,
            ),
            panel(
                "Fallbacks/s by reason",
                [
                    target(
                        f"sum by (reason) (rate(streamrec_serving_fallbacks_total[{W}]))",
                        "{{reason}}",
                    )
                ],
                unit="reqps",
                stack=True,
                width=24,
            ),
            row("Model cache"),
            panel(
                "Model cache hit ratio",
                [
                    target(
                        f"sum(rate({hits}[{W}])) "
                        f"/ (sum(rate({hits}[{W}])) + sum(rate({misses}[{W}])))",
                        "model cache",
                    ),
                    target(
                        f'sum(rate(streamrec_serving_result_cache_total{{result="hit"}}[{W}])) '
                        f"/ sum(rate(streamrec_serving_result_cache_total[{W}]))",
                        "result cache",
                    ),
                ],
                unit="percentunit",
                width=8,
            ),
            panel(
                "Model versions loaded",
                [target("max by (instance) (streamrec_serving_models_loaded)", "{{instance}}")],
                kind="stat",
                width=4,
            ),
            panel(
                "Model loads and evictions",
                [
                    target(
                        f"sum by (outcome) (increase(streamrec_serving_model_loads_total[{W}]))",
                        "load {{outcome}}",
                    ),
                    target(
                        f"sum(increase(streamrec_serving_model_cache_evictions_total[{W}]))",
                        "evicted",
                    ),
                ],
                width=6,
            ),
            panel(
                "Model load time",
                quantiles("streamrec_serving_model_load_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                width=6,
            ),
        ],
    )


def streams() -> dict[str, Any]:
    lag = "sum by (topic) (max by (topic, partition) (streamrec_stream_consumer_lag))"
    return dashboard(
        "streamrec-streams",
        "streamrec / Streams",
        "Stream workers: throughput, dead letters, lag, freshness, flushes and Redis.",
        [
            row("Throughput"),
            panel(
                "Events/s by type and outcome",
                [
                    target(
                        f"sum by (event_type, outcome) (rate(streamrec_stream_events_total[{W}]))",
                        "{{event_type}} {{outcome}}",
                    )
                ],
                unit="ops",
                stack=True,
            ),
            panel(
                "Dead letters/s by source topic",
                [
                    target(
                        f"sum by (source_topic) (rate(streamrec_stream_dead_letters_total[{W}]))",
                        "{{source_topic}}",
                    )
                ],
                unit="ops",
                description="Alert StreamrecDeadLetterRateHigh above 1% of events.",
            ),
            row("Lag and freshness"),
            panel(
                "Consumer lag by topic",
                [target(lag, "{{topic}}")],
                description="Messages behind the high watermark. Alert StreamrecConsumerLagHigh.",
            ),
            panel(
                "Freshness (produce to Redis)",
                quantiles("streamrec_stream_freshness_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                description="Alert StreamrecFreshnessP99High above 5 s.",
            ),
            row("Sinks"),
            panel(
                "Parquet flush duration",
                quantiles("streamrec_stream_flush_duration_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                width=8,
            ),
            panel(
                "Redis micro-batch duration",
                quantiles("streamrec_stream_redis_pipeline_duration_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                width=8,
            ),
            panel(
                "Sinks up",
                [target("min by (sink) (streamrec_stream_sink_up)", "{{sink}}")],
                description="1 when the sink answered its last call; retries follow a 0.",
                width=8,
            ),
            row("Redis"),
            panel(
                "Redis memory",
                [
                    target("max by (instance) (redis_memory_used_bytes)", "used"),
                    target("max by (instance) (redis_memory_used_rss_bytes)", "rss"),
                    target(
                        "max by (instance) (redis_memory_max_bytes)", "maxmemory (0: unlimited)"
                    ),
                ],
                unit="bytes",
            ),
            panel(
                "Redis keys and commands/s",
                [
                    target("sum(redis_db_keys)", "keys"),
                    target(f"sum(rate(redis_commands_processed_total[{W}]))", "commands/s"),
                ],
            ),
        ],
    )


def models() -> dict[str, Any]:
    created = "streamrec_model_created_timestamp_seconds"
    conversion = (
        f"sum by (variant, version) (rate({ROLLOUT_CONVERSIONS}[{W}])) "
        f"/ sum by (variant, version) (rate({ROLLOUT_IMPRESSIONS}[{W}]))"
    )
    return dashboard(
        "streamrec-models",
        "streamrec / Models & rollout",
        "Which versions serve, how old they are, their offline metrics, the canary and its "
        "online conversion.",
        [
            row("Live versions"),
            panel(
                "Live version",
                [target("max by (name, variant) (streamrec_model_live_version)", "{{variant}}")],
                kind="stat",
                width=6,
            ),
            panel(
                "Model age",
                [target(f"time() - max by (name, variant) ({created})", "{{variant}}")],
                kind="stat",
                unit="s",
                description="Alert StreamrecModelTooOld above 7 days (production).",
                width=6,
            ),
            panel(
                "Offline metrics of the live versions",
                [
                    target(
                        "max by (name, version, metric) (streamrec_model_offline_metric)",
                        "v{{version}} {{metric}}",
                    )
                ],
                kind="bargauge",
                description="From each version's model card (holdout evaluation at training).",
                width=12,
            ),
            row("Rollout"),
            panel(
                "Canary weight",
                [target("max by (name) (streamrec_canary_weight)", "{{name}}")],
                unit="percent",
                description="Percent of users routed to the canary (0: no canary).",
            ),
            panel(
                "/recommend requests/s by model version",
                [
                    target(
                        f"sum by (variant, model_version) "
                        f"(rate(streamrec_serving_request_seconds_count{{{RECO}}}[{W}]))",
                        "{{variant}} v{{model_version}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Online conversion by version",
                [target(conversion, "{{variant}} v{{version}}")],
                unit="percentunit",
                description="Conversions per recommendation impression, measured by the "
                "rollout controller (empty until it runs).",
            ),
            panel(
                "Alias changes",
                [
                    target(
                        f"sum by (action) (increase(streamrec_alias_changes_total[{W}]))",
                        "{{action}}",
                    ),
                    target("max by (action) (streamrec_alias_changes_total)", "total {{action}}"),
                ],
                description="publish, promote, canary, canary_weight, canary_clear, rollback. "
                "Alert StreamrecModelRolledBack on a rollback.",
            ),
        ],
    )


def kafka() -> dict[str, Any]:
    requests = 'request=~"Produce|FetchConsumer|Fetch|Metadata|OffsetCommit"'
    return dashboard(
        "streamrec-kafka",
        "streamrec / Kafka broker",
        "The broker through its JMX exporter: throughput, request latency, partitions.",
        [
            row("Throughput"),
            panel(
                "Bytes in/out per second",
                [
                    target(
                        f'sum(rate(kafka_server_brokertopicmetrics_bytesin_total{{topic=""}}[{W}]))',
                        "in",
                    ),
                    target(
                        f'sum(rate(kafka_server_brokertopicmetrics_bytesout_total{{topic=""}}[{W}]))',
                        "out",
                    ),
                ],
                unit="Bps",
            ),
            panel(
                "Messages in/s by topic (top 10)",
                [
                    target(
                        "topk(10, sum by (topic) (rate("
                        f'kafka_server_brokertopicmetrics_messagesin_total{{topic!=""}}[{W}])))',
                        "{{topic}}",
                    )
                ],
                unit="ops",
            ),
            row("Requests"),
            panel(
                "Request latency p99 by request",
                [
                    target(
                        "max by (request) (kafka_network_requestmetrics_totaltimems"
                        f'{{quantile="0.99",{requests}}})',
                        "{{request}}",
                    )
                ],
                unit="ms",
                description="Broker-side total time. Fetch includes the long-poll wait "
                "(fetch.max.wait.ms), so it is high when topics are idle.",
            ),
            panel(
                "Requests/s by request",
                [
                    target(
                        "sum by (request) (rate(kafka_network_requestmetrics_requests_total"
                        f"{{{requests}}}[{W}]))",
                        "{{request}}",
                    )
                ],
                unit="reqps",
            ),
            row("Partitions and JVM"),
            panel(
                "Partitions",
                [
                    target("sum(kafka_server_replicamanager_partitioncount)", "partitions"),
                    target("sum(kafka_server_replicamanager_leadercount)", "leaders"),
                    target(
                        "sum(kafka_server_replicamanager_underreplicatedpartitions)",
                        "under-replicated",
                    ),
                    target(
                        "sum(kafka_controller_kafkacontroller_offlinepartitionscount)", "offline"
                    ),
                ],
            ),
            panel(
                "Broker JVM heap",
                [
                    target('sum(jvm_memory_used_bytes{job="kafka",area="heap"})', "used"),
                    target('sum(jvm_memory_max_bytes{job="kafka",area="heap"})', "max"),
                ],
                unit="bytes",
            ),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        "streamrec-api.json": api(),
        "streamrec-streams.json": streams(),
        "streamrec-models.json": models(),
        "streamrec-kafka.json": kafka(),
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, board in dashboards().items():
        path = args.out / name
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python infra/grafana/generate.py\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
