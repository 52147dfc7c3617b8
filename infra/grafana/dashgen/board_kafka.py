"""streamrec / Kafka broker, through its JMX exporter: throughput, request latency,
partitions."""

from __future__ import annotations

from typing import Any

from .panels import W, dashboard, panel, row, target


def build() -> dict[str, Any]:
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
