"""Settings sections of the two long-running components: the stream worker (streams/,
`streamrec stream`) and the recommendation API (serving/, `streamrec serve`)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from core.config_section import Section
from schemas import redis_keys as rk


class StreamSettings(Section):
    """``STREAMREC_STREAM_*``. The Redis layout's caps and TTLs default to the values the
    key layout documents (schemas.redis_keys), stated there once."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_STREAM_")

    app_id: str = Field(
        "streamrec-streams", description="Worker name; <topic_prefix>.<this> is the group id."
    )
    metrics_port: int = Field(
        6066, description="Port of the worker's web server (/metrics); 0 picks a free port."
    )
    metrics_host: str = Field("127.0.0.1", description="Address of the worker's /metrics.")
    redis_batch_events: int = Field(
        10_000,
        ge=1,
        description="Max events per Redis micro-batch (one script call). Bigger batches "
        "aggregate more per key; a full one blocks Redis ~50-100 ms while catching up.",
    )
    redis_batch_ms: int = Field(
        20, ge=1, description="Max wait (ms) to fill a Redis micro-batch (freshness bound)."
    )
    redis_batch_min_events: int = Field(
        1_000,
        ge=1,
        description="Cap of a micro-batch while caught up (the visibility cadence): each "
        "full batch doubles the cap up to redis_batch_events (catching up), a short one "
        "resets it, so a live event never waits behind a catch-up-sized Redis call.",
    )
    fetch_max_wait_ms: int = Field(
        10,
        ge=1,
        le=500,
        description="Confluent engine: how long the broker may hold a fetch for "
        "fetch_min_bytes, the most a live event waits there. (The Faust engine keeps 50 ms "
        "and 16 KiB: streams/faust_consumer.py says why.)",
    )
    fetch_min_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Confluent engine: bytes a fetch waits for (up to fetch_max_wait_ms). "
        "Large: a live stream is fetched once per fetch_max_wait_ms rather than as soon as "
        "a record is there, which cost the broker ~0.15 core at 5,000 events/s.",
    )
    flush_events: int = Field(
        50_000, ge=1, description="Flush Parquet snapshots after this many buffered events..."
    )
    flush_interval_s: float = Field(
        30.0, gt=0, description="...or when the oldest buffered event is this old (seconds)."
    )
    parquet_compression: str = Field(
        "snappy",
        description="snappy or zstd. snappy: a third of the CPU per file (zstd sets up a "
        "context per column chunk), which dominates the small files of a replay of history.",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Group session timeout: how soon a dead worker's "
        "partitions move to the survivors.",
    )
    max_poll_interval_ms: int = Field(
        1_800_000, ge=10_000, description="How long a worker may hold (sink down) in the group."
    )
    retry_max_s: float = Field(
        30.0, gt=0, description="Cap of the retry backoff when Redis or storage is down."
    )
    user_recent_cap: int = Field(
        rk.USER_RECENT_CAP, ge=1, description="Items kept per user history."
    )
    user_ttl_s: int = Field(
        rk.USER_TTL_S, ge=60, description="TTL of per-user keys (refreshed on activity)."
    )
    item_ttl_s: int = Field(rk.ITEM_TTL_S, ge=60, description="TTL of item stats.")
    pop_hour_ttl_s: int = Field(rk.POP_HOUR_TTL_S, ge=60, description="TTL of hourly buckets.")
    pop_day_ttl_s: int = Field(rk.POP_DAY_TTL_S, ge=60, description="TTL of daily buckets.")
    trending_cap: int = Field(rk.TRENDING_CAP, ge=1, description="Items kept in the trending set.")
    trending_interval_s: float = Field(
        5.0, gt=0, description="How often the trending set is recomputed from hourly buckets."
    )
    ttl_refresh_s: float = Field(
        300.0,
        gt=0,
        description="A worker re-sends a key's EXPIRE at most this often (capped at a tenth "
        "of the shortest TTL); fewer Redis calls per event.",
    )
    engine: str = Field(
        "confluent",
        pattern="^(confluent|faust)$",
        description="Consumer engine of `streamrec stream`: confluent (librdkafka; the "
        "default) or faust (a faust-streaming agent fed whole batches; 0.7-1.2x the confluent "
        "engine's throughput in a same-run benchmark here, see README). Same processor, sinks "
        "and commit-after-durable; a worker of the other engine in a group is refused.",
    )
    parquet_writers: int = Field(
        4,
        ge=1,
        le=64,
        description="Snapshot files a worker writes at once (each file is fsynced; directory "
        "fsyncs are batched once per flush job, before its commit).",
    )
    dead_letter_max_bytes: int = Field(
        262_144, ge=8192, description="Dead-letter records are cut to this size (sr-truncated)."
    )
    pop_cap: int = Field(rk.POP_CAP, ge=100, description="Items kept per popularity set.")
    dedupe_window: int = Field(
        rk.DEDUPE_WINDOW,
        ge=0,
        description="Re-sent event ids within this many offsets of their partition are not "
        "counted again in Redis (up to 2x this many ids kept per partition); 0: off.",
    )


class ServeSettings(Section):
    """``STREAMREC_SERVE_*``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_SERVE_")

    host: str = Field("127.0.0.1", description="Address the recommendation API binds.")
    port: int = Field(8082, ge=0, le=65535, description="Port of the recommendation API.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    default_k: int = Field(20, ge=1, description="Items returned when `k` is not given.")
    max_k: int = Field(100, ge=1, le=1000, description="Largest `k` a client may ask for.")
    budget_ms: float = Field(
        50.0, gt=0, description="Time budget of the model path; past it the answer falls back."
    )
    model_cache_size: int = Field(
        3, ge=1, description="Model versions kept loaded (LRU) per worker."
    )
    alias_poll_s: float = Field(
        5.0, gt=0, description="How often each worker re-reads the alias document."
    )
    history_len: int = Field(
        50, ge=0, le=200, description="Newest Redis history items folded into the user vector."
    )
    item_features_refresh_s: float = Field(
        5.0, gt=0, description="How often real-time item stats are re-read from Redis."
    )
    redis_timeout_ms: float = Field(
        1000.0,
        gt=0,
        description="Socket timeout of the API's Redis client (requests are "
        "bounded by the budget anyway; this bounds feedback and readiness calls).",
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Larger bodies get 413, unread.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the admin endpoints; unset disables them (403)."
    )
    log_queue_max: int = Field(
        100_000, ge=100, description="Request/response log queue; when full, logs are dropped."
    )
    log_linger_ms: float = Field(
        500.0,
        ge=0,
        le=5000,
        description="How long request/response logs wait in the producer to go out together "
        "(librdkafka `linger.ms`): the broker's CPU goes by produce requests, not records, "
        "and at 50 ms it cost ~0.1 ms a request on the serving cores (issue 14); a shutdown "
        "still flushes them all.",
    )
    feedback_dedup_ttl_s: int = Field(
        24 * 3600, ge=60, description="How long a feedback event id is remembered (idempotency)."
    )
    result_cache_size: int = Field(
        10_000,
        ge=0,
        description="Model answers memoised per worker, keyed by every input of the model "
        "call (exact, never stale); 0 disables.",
    )
    model_inline: bool = Field(
        True,
        description="Run model calls on the event loop (batched with the calls reaching it "
        "in the same loop iteration) instead of the compute thread: no thread hand-off and "
        "no GIL contention with the loop (a lower p99 at half max). A batch on the loop is "
        "not cut off at the budget: a model whose call took over half the budget there "
        "(its own CPU, or twice in a row off-CPU) answers `timeout` and is served from the "
        "compute thread for 60 s.",
    )
    model_batch_max: int = Field(
        32,
        ge=1,
        le=1024,
        description="Most model calls of concurrent requests made together in one batch on "
        "the compute thread (calls arriving while a batch runs go in the next); 1: one "
        "call per hand-off.",
    )
    model_batch_hold_ms: float = Field(
        1.0,
        ge=0,
        le=10,
        description="How long a model batch on the event loop may wait, when other requests "
        "are on their way to it (reading Redis), for them to join it; it goes as soon as they "
        "have, or it is full. None on their way: no wait. Larger batches cost less CPU a call "
        "(issue 14); 0: never waits. Under 0.5 ms is no wait with uvloop (whole-ms timers).",
    )
    probe_path: str | None = Field(
        None,
        description="Dev only: record the event loop's lag, the phases of requests slower "
        "than 20 ms and the background work, written to `<path>.<pid>` when a worker stops "
        "(serving.probe; `bench/serving.py --probe`). Unset: off.",
    )
    preload: bool = Field(
        True,
        description="Start loading the production model in the background at startup "
        "(models still load lazily on first use; no request waits past its budget).",
    )
