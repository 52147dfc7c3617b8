"""Settings sections of the services every component talks to: Kafka, Redis, object storage."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.config_section import Section


class KafkaSettings(Section):
    """``STREAMREC_KAFKA_*``, and the topics' ``STREAMREC_TOPIC_*``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_KAFKA_")

    bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers.")
    delivery_timeout_ms: int = Field(
        300_000, ge=1000, description="How long a producer retries a message: above a restart."
    )
    topic_prefix: str = Field(
        "streamrec",
        validation_alias="STREAMREC_TOPIC_PREFIX",
        description="The {team} in {team}.watch.",
    )
    topic_partitions: int = Field(
        4,
        ge=1,
        validation_alias="STREAMREC_TOPIC_PARTITIONS",
        description="Partitions per event topic.",
    )
    topic_retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        validation_alias="STREAMREC_TOPIC_RETENTION_MS",
        description="Event topic retention.",
    )
    topic_replication_factor: int = Field(
        1,
        ge=1,
        validation_alias="STREAMREC_TOPIC_REPLICATION_FACTOR",
        description="Replicas per topic `topics` creates; 1 suits the single local broker, "
        "3 a production cluster.",
    )
    topic_min_insync_replicas: int = Field(
        1,
        ge=1,
        validation_alias="STREAMREC_TOPIC_MIN_INSYNC_REPLICAS",
        description="min.insync.replicas of the topics `topics` creates (set if > 1).",
    )
    controller_port: int = Field(9093, description="KRaft controller port (local stack).")
    heap: str = Field(
        "-Xms512m -Xmx1g", description="JVM heap flags for the local broker (`stack up`)."
    )
    jmx_exporter_port: int = Field(
        9404, description="Port of the broker's Prometheus JMX exporter (local stack)."
    )

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic name (``watch`` -> ``streamrec.watch``)."""
        return f"{self.topic_prefix}.{name}"


class RedisSettings(Section):
    """``STREAMREC_REDIS_*``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_REDIS_")

    url: str = Field(
        "redis://localhost:6379/0",
        description="Redis for features. On a cluster: any node, or several as seeds, "
        "comma-separated in the host part (`redis://n1:6379,n2:6379/0`).",
    )
    cluster: bool = Field(
        False,
        description="Speak the Redis Cluster protocol to `redis_url` (any node of the "
        "cluster): the stream worker, serving, the rollout controller and the simulator.",
    )
    min_replicas_ack: int = Field(
        0,
        ge=0,
        description="Replicas that must hold a stream batch before its offsets are committed "
        "(WAIT): 1 on a cluster, so losing a master loses nothing committed.",
    )
    wait_timeout_ms: int = Field(
        1000, ge=1, description="How long the worker waits for replicas before it retries."
    )
    key_prefix: str = Field("sr", description="Prefix for every Redis key we write.")


class StorageSettings(Section):
    """``STREAMREC_STORAGE_URL`` and ``STREAMREC_S3_ENDPOINT_URL``. :class:`core.config.Settings`
    fills an unset ``url`` from its data directory, so a section taken from it is resolved."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_STORAGE_")

    url: str | None = Field(
        None, description="file:///path or s3://bucket/prefix (default file://<data_dir>/storage)."
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias="STREAMREC_S3_ENDPOINT_URL",
        description="Endpoint for S3-compatible servers.",
    )

    @property
    def location(self) -> str:
        """The resolved URL (a bare section, not built by Settings, has none by default)."""
        if self.url is None:
            raise ValueError("storage url is unset: build the section from core.config.Settings")
        return self.url
