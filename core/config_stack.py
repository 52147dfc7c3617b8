"""Settings sections of the local stack (`streamrec stack ...`): its single-node and
clustered topologies, MinIO, and the observability services (Prometheus, Alertmanager,
Perses) with the scrape targets they need."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from core.config_section import Section


class StackSettings(Section):
    """``STREAMREC_STACK_*``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_STACK_")

    timeout_s: float = Field(
        60.0, gt=0, description="How long `stack up` waits for each service to be ready."
    )
    topology: Literal["single", "cluster"] = Field(
        "single", description="What `stack up/down/status` manage when `--topology` is not given."
    )


class ClusterSettings(Section):
    """``STREAMREC_CLUSTER_*``: `stack up --topology cluster`, in <data_dir>/cluster/."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_CLUSTER_")

    kafka_base_port: int = Field(
        19092, ge=1, description="Broker n=1..3: base+2n-2, controller +1, JMX exporter base+5+n."
    )
    kafka_heap: str = Field("-Xms256m -Xmx512m", description="Heap of each cluster broker.")
    redis_base_port: int = Field(
        7001, ge=1, description="Redis Cluster node n=1..6 on base+n-1, its cluster bus on +10000."
    )
    redis_node_timeout_ms: int = Field(
        3000, ge=100, description="cluster-node-timeout: a master down this long fails over."
    )


class MinioSettings(Section):
    """``STREAMREC_MINIO_*``: the local S3-compatible store (`stack up --service minio`).

    Point storage at it with STREAMREC_STORAGE_URL=s3://<minio_bucket>/<prefix> and
    STREAMREC_S3_ENDPOINT_URL=http://127.0.0.1:<minio_port>; boto3 reads the credentials from
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (= the two root settings below)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_MINIO_")

    port: int = Field(9000, ge=1, le=65535, description="S3 API port of the local MinIO.")
    console_port: int = Field(
        9001, ge=1, le=65535, description="Web console port of the local MinIO."
    )
    root_user: str = Field(
        "streamrec", min_length=3, description="Root access key of the local MinIO."
    )
    root_password: SecretStr = Field(
        SecretStr("streamrec-secret"),
        description="Root secret key of the local MinIO (8+ characters).",
    )
    bucket: str = Field(
        "streamrec", description="Bucket `stack up --service minio` creates (idempotent)."
    )


class ObservabilitySettings(Section):
    """Prometheus' port and the scrape targets it has besides the API (``serve.port``), the
    stream worker (``stream.metrics_port``), the broker (``kafka.jmx_exporter_port``) and the
    rollout controller (``rollout.metrics_port``); the dashboards' port. Their variables keep
    the names they had before sections (``STREAMREC_PROMETHEUS_PORT``...)."""

    prometheus_port: int = Field(9090, description="Local Prometheus server port.")
    redis_exporter_port: int = Field(
        9121,
        ge=1,
        le=65535,
        description="Port of the Redis exporter `stack up --service prometheus` runs beside "
        "Prometheus (Redis memory, clients, commands).",
    )
    perses_port: int = Field(
        8080,
        ge=1,
        le=65535,
        description="Port of the local Perses dashboard server (`stack up --service perses`).",
    )


class AlertmanagerSettings(Section):
    """``STREAMREC_ALERTMANAGER_*`` (`stack up --service alertmanager`)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_ALERTMANAGER_")

    # 9093 is the KRaft controller's.
    port: int = Field(9095, ge=1, le=65535, description="Local Alertmanager port.")
    page_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="Where Alertmanager POSTs `severity=page` alerts (webhook JSON); empty: "
        "held in Alertmanager, sent nowhere. See Alerting in the README.",
    )
    ticket_webhook_url: SecretStr = Field(
        SecretStr(""), description="The same for every other alert (`severity=warning`)."
    )
