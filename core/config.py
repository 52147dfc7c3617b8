"""The one settings class. Every knob is an environment variable prefixed ``STREAMREC_``.

Built on demand by :func:`get_settings` (never at import time), so tests can set the env first.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.config_rollout import RolloutFields

# The repository root when running from a checkout; installed copies fall back to the cwd.
_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_HOME = _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").exists() else Path.cwd()


class Settings(RolloutFields, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    home: Path = Field(_DEFAULT_HOME, description="Project home; data/ and .cache/ live here.")
    data_dir: Path | None = Field(None, description="Runtime data (default: <home>/data).")
    cache_dir: Path | None = Field(
        None,
        description="Downloads and tool builds: Kafka jars, datasets, MinIO, terraform "
        "(default: $XDG_CACHE_HOME/streamrec or ~/.cache/streamrec, shared by checkouts).",
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers.")
    kafka_delivery_timeout_ms: int = Field(
        300_000, ge=1000, description="How long a producer retries a message: above a restart."
    )
    topic_prefix: str = Field("streamrec", description="The {team} in {team}.watch.")
    topic_partitions: int = Field(4, ge=1, description="Partitions per event topic.")
    topic_retention_ms: int = Field(7 * 24 * 3600 * 1000, description="Event topic retention.")
    topic_replication_factor: int = Field(
        1,
        ge=1,
        description="Replicas per topic `topics` creates; 1 suits the single local broker, "
        "3 a production cluster.",
    )
    topic_min_insync_replicas: int = Field(
        1, ge=1, description="min.insync.replicas of the topics `topics` creates (set if > 1)."
    )
    kafka_controller_port: int = Field(9093, description="KRaft controller port (local stack).")
    kafka_heap: str = Field(
        "-Xms512m -Xmx1g", description="JVM heap flags for the local broker (`stack up`)."
    )
    kafka_jmx_exporter_port: int = Field(
        9404, description="Port of the broker's Prometheus JMX exporter (local stack)."
    )

    # --- Redis -------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis for features. On a cluster: any node, or several as seeds, "
        "comma-separated in the host part (`redis://n1:6379,n2:6379/0`).",
    )
    redis_cluster: bool = Field(
        False,
        description="Speak the Redis Cluster protocol to `redis_url` (any node of the "
        "cluster): the stream worker, serving, the rollout controller and the simulator.",
    )
    redis_min_replicas_ack: int = Field(
        0,
        ge=0,
        description="Replicas that must hold a stream batch before its offsets are committed "
        "(WAIT): 1 on a cluster, so losing a master loses nothing committed.",
    )
    redis_wait_timeout_ms: int = Field(
        1000, ge=1, description="How long the worker waits for replicas before it retries."
    )
    redis_key_prefix: str = Field("sr", description="Prefix for every Redis key we write.")

    # --- Object storage ----------------------------------------------------------------
    storage_url: str | None = Field(
        None, description="file:///path or s3://bucket/prefix (default file://<data_dir>/storage)."
    )
    s3_endpoint_url: str | None = Field(None, description="Endpoint for S3-compatible servers.")

    # --- Observability -----------------------------------------------------------------
    prometheus_port: int = Field(9090, description="Local Prometheus server port.")
    stack_timeout_s: float = Field(
        60.0, gt=0, description="How long `stack up` waits for each service to be ready."
    )
    log_level: str = Field("INFO", description="Log level for our loggers.")

    # --- clustered local stack (`stack up --topology cluster`, in <data_dir>/cluster/) ----
    stack_topology: Literal["single", "cluster"] = Field(
        "single", description="What `stack up/down/status` manage when `--topology` is not given."
    )
    cluster_kafka_base_port: int = Field(
        19092, ge=1, description="Broker n=1..3: base+2n-2, controller +1, JMX exporter base+5+n."
    )
    cluster_kafka_heap: str = Field("-Xms256m -Xmx512m", description="Heap of each cluster broker.")
    cluster_redis_base_port: int = Field(
        7001, ge=1, description="Redis Cluster node n=1..6 on base+n-1, its cluster bus on +10000."
    )
    cluster_redis_node_timeout_ms: int = Field(
        3000, ge=100, description="cluster-node-timeout: a master down this long fails over."
    )

    # --- stream processor (streams/, `streamrec stream`) ---------------------------------
    stream_app_id: str = Field(
        "streamrec-streams", description="Worker name; <topic_prefix>.<this> is the group id."
    )
    stream_metrics_port: int = Field(
        6066, description="Port of the worker's web server (/metrics); 0 picks a free port."
    )
    stream_metrics_host: str = Field("127.0.0.1", description="Address of the worker's /metrics.")
    stream_redis_batch_events: int = Field(
        10_000,
        ge=1,
        description="Max events per Redis micro-batch (one script call). Bigger batches "
        "aggregate more per key; a full one blocks Redis ~50-100 ms while catching up.",
    )
    stream_redis_batch_ms: int = Field(
        20, ge=1, description="Max wait (ms) to fill a Redis micro-batch (freshness bound)."
    )
    stream_flush_events: int = Field(
        50_000, ge=1, description="Flush Parquet snapshots after this many buffered events..."
    )
    stream_flush_interval_s: float = Field(
        30.0, gt=0, description="...or when the oldest buffered event is this old (seconds)."
    )
    stream_parquet_compression: str = Field(
        "snappy",
        description="snappy or zstd. snappy: a third of the CPU per file (zstd sets up a "
        "context per column chunk), which dominates the small files of a replay of history.",
    )
    stream_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Group session timeout: how soon a dead worker's "
        "partitions move to the survivors.",
    )
    stream_max_poll_interval_ms: int = Field(
        1_800_000, ge=10_000, description="How long a worker may hold (sink down) in the group."
    )
    stream_retry_max_s: float = Field(
        30.0, gt=0, description="Cap of the retry backoff when Redis or storage is down."
    )
    stream_user_recent_cap: int = Field(200, ge=1, description="Items kept per user history.")
    stream_user_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="TTL of per-user keys (refreshed on activity)."
    )
    stream_item_ttl_s: int = Field(90 * 24 * 3600, ge=60, description="TTL of item stats.")
    stream_pop_hour_ttl_s: int = Field(48 * 3600, ge=60, description="TTL of hourly buckets.")
    stream_pop_day_ttl_s: int = Field(35 * 24 * 3600, ge=60, description="TTL of daily buckets.")
    stream_trending_cap: int = Field(1000, ge=1, description="Items kept in the trending set.")
    stream_trending_interval_s: float = Field(
        5.0, gt=0, description="How often the trending set is recomputed from hourly buckets."
    )
    stream_ttl_refresh_s: float = Field(
        300.0,
        gt=0,
        description="A worker re-sends a key's EXPIRE at most this often (capped at a tenth "
        "of the shortest TTL); fewer Redis calls per event.",
    )
    stream_engine: str = Field(
        "confluent",
        pattern="^(confluent|faust)$",
        description="Consumer engine of `streamrec stream`: confluent (librdkafka; the "
        "default: ~10x the throughput here, see README) or faust (a faust-streaming agent). Same "
        "processor, sinks and commit-after-durable; workers of one group must use one engine.",
    )
    stream_parquet_writers: int = Field(
        4,
        ge=1,
        le=64,
        description="Snapshot files a worker writes at once (each file is fsynced; directory "
        "fsyncs are batched once per flush job, before its commit).",
    )
    stream_dead_letter_max_bytes: int = Field(
        262_144, ge=8192, description="Dead-letter records are cut to this size (sr-truncated)."
    )
    stream_pop_cap: int = Field(100_000, ge=100, description="Items kept per popularity set.")
    stream_dedupe_window: int = Field(
        100_000,
        ge=0,
        description="Re-sent event ids within this many offsets of their partition are not "
        "counted again in Redis (up to 2x this many ids kept per partition); 0: off.",
    )

    # --- serving (serving/, `streamrec serve`) -------------------------------------------
    serve_host: str = Field("127.0.0.1", description="Address the recommendation API binds.")
    serve_port: int = Field(8082, ge=0, le=65535, description="Port of the recommendation API.")
    serve_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    serve_default_k: int = Field(20, ge=1, description="Items returned when `k` is not given.")
    serve_max_k: int = Field(100, ge=1, le=1000, description="Largest `k` a client may ask for.")
    serve_budget_ms: float = Field(
        50.0, gt=0, description="Time budget of the model path; past it the answer falls back."
    )
    serve_model_cache_size: int = Field(
        3, ge=1, description="Model versions kept loaded (LRU) per worker."
    )
    serve_alias_poll_s: float = Field(
        5.0, gt=0, description="How often each worker re-reads the alias document."
    )
    serve_history_len: int = Field(
        50, ge=0, le=200, description="Newest Redis history items folded into the user vector."
    )
    serve_item_features_refresh_s: float = Field(
        5.0, gt=0, description="How often real-time item stats are re-read from Redis."
    )
    serve_redis_timeout_ms: float = Field(
        1000.0,
        gt=0,
        description="Socket timeout of the API's Redis client (requests are "
        "bounded by the budget anyway; this bounds feedback and readiness calls).",
    )
    serve_max_body_bytes: int = Field(65536, ge=1024, description="Larger bodies get 413, unread.")
    serve_admin_token: SecretStr | None = Field(
        None, description="Bearer token of the admin endpoints; unset disables them (403)."
    )
    serve_log_queue_max: int = Field(
        100_000, ge=100, description="Request/response log queue; when full, logs are dropped."
    )
    serve_feedback_dedup_ttl_s: int = Field(
        24 * 3600, ge=60, description="How long a feedback event id is remembered (idempotency)."
    )
    serve_result_cache_size: int = Field(
        10_000,
        ge=0,
        description="Model answers memoised per worker, keyed by every input of the model "
        "call (exact, never stale); 0 disables.",
    )
    serve_model_inline: bool = Field(
        False,
        description="Run model calls on the event loop instead of a thread: no thread "
        "hand-off per request, but a call past the budget is not cut off.",
    )
    serve_preload: bool = Field(
        True,
        description="Start loading the production model in the background at startup "
        "(models still load lazily on first use; no request waits past its budget).",
    )

    # --- training + model registry (training/, models/, `streamrec train|models`) ---------
    model_name: str = Field("reco", description="Registry name: models/<name>/ in storage.")
    # Defaults tuned on a validation split of ML-100K's training part (`train --tune`), not test.
    train_als_factors: int = Field(32, ge=1, le=1024, description="ALS latent factors.")
    train_als_regularization: float = Field(0.1, ge=0, description="ALS L2 regularization.")
    train_als_alpha: float = Field(1.0, gt=0, description="ALS confidence scale (C = alpha*w).")
    train_als_iterations: int = Field(15, ge=1, le=200, description="ALS sweeps.")
    train_knn_neighbours: int = Field(200, ge=1, description="Neighbours of the item-kNN baseline.")
    train_knn_similarity: str = Field(
        "cosine", pattern="^(cosine|bm25|tfidf)$", description="Item-kNN similarity."
    )
    train_pop_half_life_days: float | None = Field(
        None, gt=0, description="Popularity half-life in days (unset: no decay)."
    )
    train_candidates: int = Field(200, ge=10, le=5000, description="ALS candidates re-ranked.")
    train_ranker_rounds: int = Field(200, ge=1, description="Max LightGBM boosting rounds.")
    train_ranker_max_users: int = Field(
        5000, ge=10, description="Users sampled to build the ranker's training set."
    )
    train_eval_max_users: int = Field(
        5000, ge=10, description="Holdout users evaluated (sampled with the seed beyond this)."
    )
    train_threads: int = Field(0, ge=0, description="Threads for ALS and kNN (0: all cores).")
    train_ranker_threads: int = Field(
        1, ge=0, description="LightGBM threads (OpenMP spinning crawls on busy small hosts)."
    )
    train_seed: int = Field(42, description="Random seed of every fitted stage.")
    train_watch_weight: float = Field(
        1.0, ge=0, description="Weight of watching: watch_weight * log2(1 + watch events)."
    )
    train_rate_weight: float = Field(
        1.0, ge=0, description="Weight of rating: rate_weight * rating / 5 (latest rating)."
    )
    train_catalog: str = Field(
        "auto",
        pattern="^(auto|topic|movielens|none)$",
        description="Item catalog for genre/year features: auto, topic, movielens, none.",
    )
    train_gate_metric: str = Field(
        "ndcg@10", description="Metric the quality gate compares with production."
    )
    train_gate_min_gain: float = Field(
        0.0, ge=0, description="Relative gain over production the gate requires (0.02 = 2%)."
    )
    train_gate_min_users: int = Field(
        50, ge=1, description="Fewest holdout users production has not trained on, for a fair gate."
    )

    # --- MinIO: local S3-compatible store (`streamrec stack up --service minio`) ----------
    # Point storage at it with STREAMREC_STORAGE_URL=s3://<minio_bucket>/<prefix> and
    # STREAMREC_S3_ENDPOINT_URL=http://127.0.0.1:<minio_port>; boto3 reads the credentials
    # from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (= the two root settings below).
    minio_port: int = Field(9000, ge=1, le=65535, description="S3 API port of the local MinIO.")
    minio_console_port: int = Field(
        9001, ge=1, le=65535, description="Web console port of the local MinIO."
    )
    minio_root_user: str = Field(
        "streamrec", min_length=3, description="Root access key of the local MinIO."
    )
    minio_root_password: SecretStr = Field(
        SecretStr("streamrec-secret"),
        description="Root secret key of the local MinIO (8+ characters).",
    )
    minio_bucket: str = Field(
        "streamrec", description="Bucket `stack up --service minio` creates (idempotent)."
    )

    # --- observability: scrape targets of infra/prometheus (`stack up --service prometheus`)
    # Prometheus' own port is `prometheus_port` above; these are the targets it scrapes
    # besides the API (serve_port), the stream worker (stream_metrics_port) and the broker
    # (kafka_jmx_exporter_port).
    rollout_metrics_port: int = Field(
        6067,
        ge=1,
        le=65535,
        description="Port of the rollout controller's /metrics, as scraped by Prometheus.",
    )
    rollout_metrics_host: str = Field(
        "127.0.0.1",
        description="Address the rollout controller's /metrics binds; 0.0.0.0 when Prometheus "
        "scrapes it from another host or container.",
    )
    redis_exporter_port: int = Field(
        9121,
        ge=1,
        le=65535,
        description="Port of the Redis exporter `stack up --service prometheus` runs beside "
        "Prometheus (Redis memory, clients, commands).",
    )
    # --- Alertmanager (`stack up --service alertmanager`); 9093 is the KRaft controller's.
    alertmanager_port: int = Field(9095, ge=1, le=65535, description="Local Alertmanager port.")
    alertmanager_page_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="Where Alertmanager POSTs `severity=page` alerts (webhook JSON); empty: "
        "held in Alertmanager, sent nowhere. See Alerting in the README.",
    )
    alertmanager_ticket_webhook_url: SecretStr = Field(
        SecretStr(""), description="The same for every other alert (`severity=warning`)."
    )
    perses_port: int = Field(
        8080,
        ge=1,
        le=65535,
        description="Port of the local Perses dashboard server (`stack up --service perses`).",
    )

    @property
    def data_path(self) -> Path:
        return (self.data_dir or self.home / "data").resolve()

    @property
    def cache_path(self) -> Path:
        # Per user, not per checkout: a fresh clone (CI) reuses jars and tool builds (minutes).
        if self.cache_dir:
            return self.cache_dir.resolve()
        xdg = os.environ.get("XDG_CACHE_HOME")
        return ((Path(xdg) if xdg else Path.home() / ".cache") / "streamrec").resolve()

    @property
    def storage(self) -> str:
        return self.storage_url or f"file://{self.data_path / 'storage'}"

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic name (``watch`` -> ``streamrec.watch``)."""
        return f"{self.topic_prefix}.{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build ``Settings(...)`` directly instead."""
    return Settings()
