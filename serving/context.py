"""Everything a worker holds for its lifetime: clients, the model cache, background tasks.
Built by :func:`open_context` inside the app's lifespan (never at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from threadpoolctl import threadpool_limits

from core.config import Settings
from core.redis import host_port, seed_urls
from core.storage import ObjectStore, open_store
from models.features import LiveItemFeatures
from schemas.redis_keys import RedisKeys
from serving import registry_metrics
from serving.batcher import ModelBatcher
from serving.cluster_reader import ClusterReader
from serving.features import ItemFeatureTable
from serving.logging_sink import EventSink
from serving.metrics import ServingMetrics
from serving.model_cache import ModelCache
from serving.probe import Probe
from serving.redis_reader import RedisReader
from serving.result_cache import ResultCache
from serving.warmup import warm_model

if TYPE_CHECKING:
    from models.base import Recommender

log = logging.getLogger(__name__)


@dataclass
class ServingContext:
    settings: Settings
    metrics: ServingMetrics
    redis: Redis | RedisCluster  # redis-py: feedback dedupe, readiness
    reader: RedisReader | ClusterReader  # the request path's reads and the item-feature sweep
    keys: RedisKeys
    store: ObjectStore
    models: ModelCache
    items: ItemFeatureTable
    sink: EventSink
    compute: ThreadPoolExecutor  # model calls; apart from loads so a load never queues them
    batcher: ModelBatcher  # model calls of concurrent requests, together on ``compute``
    results: ResultCache
    probe: Probe | None = None  # dev only (STREAMREC_SERVE_PROBE_PATH)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def build_registry(settings: Settings, store: ObjectStore):  # -> models.registry.ModelRegistry
    from models.registry import ModelRegistry  # LightGBM/implicit load only when serving

    return ModelRegistry(store, settings.model_name)


@contextlib.asynccontextmanager
async def open_context(
    settings: Settings, metrics: ServingMetrics | None = None
) -> AsyncIterator[ServingContext]:
    metrics = metrics or ServingMetrics()
    # One BLAS/OpenMP thread per model call: on a small machine, several requests in
    # parallel beat one request fanned out over every core (and oversubscription).
    limits = threadpool_limits(limits=1)
    redis = _redis_client(settings)
    store = open_store(settings.storage)
    # Both connect lazily: serving starts (and falls back) while Redis is down.
    reader = (ClusterReader if settings.redis.cluster else RedisReader)(
        settings.redis.url, connect_timeout=settings.serve.redis_timeout_ms / 1000
    )
    keys = RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions)
    loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
    compute = ThreadPoolExecutor(
        max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="model-call"
    )
    items = ItemFeatureTable(reader, keys, timeout_s=settings.serve.redis_timeout_ms / 1000)
    models = ModelCache(
        build_registry(settings, store),
        size=settings.serve.model_cache_size,
        metrics=metrics,
        executor=loader,
        retry_s=settings.serve.alias_poll_s,
        warm=functools.partial(_warm_on, items),
    )
    items.prepare = functools.partial(_warm_loaded, models, loader)
    ctx = ServingContext(
        settings=settings,
        metrics=metrics,
        redis=redis,
        reader=reader,
        keys=keys,
        store=store,
        models=models,
        items=items,
        sink=EventSink(
            settings.kafka,
            settings.serve.log_queue_max,
            metrics,
            linger_ms=settings.serve.log_linger_ms,
        ),
        compute=compute,
        batcher=ModelBatcher(
            compute,
            max_batch=settings.serve.model_batch_max,
            inline=settings.serve.model_inline,
            budget_s=settings.serve.budget_ms / 1000,
            hold_s=settings.serve.model_batch_hold_ms / 1000,
            metrics=metrics,
            before_inline=reader.flush,
        ),
        results=ResultCache(settings.serve.result_cache_size),
    )
    if settings.serve.probe_path:
        _attach_probe(ctx, Probe(settings.serve.probe_path))
    ctx.tasks = [
        asyncio.create_task(ctx.items.run(settings.serve.item_features_refresh_s)),
        asyncio.create_task(
            ctx.models.run(settings.serve.alias_poll_s, preload=settings.serve.preload)
        ),
        asyncio.create_task(_poll_producer(ctx.sink)),
        asyncio.create_task(
            registry_metrics.follow(ctx.models, metrics.registry_facts, settings.serve.alias_poll_s)
        ),
    ]
    try:
        yield ctx
    finally:
        for task in ctx.tasks:
            task.cancel()
        await asyncio.gather(*ctx.tasks, return_exceptions=True)
        if ctx.probe is not None:
            await ctx.probe.stop()
        ctx.sink.close()
        await reader.aclose()
        await redis.aclose()
        compute.shutdown(wait=False, cancel_futures=True)
        loader.shutdown(wait=False, cancel_futures=True)
        limits.restore_original_limits()


def _attach_probe(ctx: ServingContext, probe: Probe) -> None:
    """Dev only: the probe times the background work that shares the worker with requests
    (instance attributes shadow the methods the background tasks look up)."""
    ctx.probe = ctx.batcher.probe = probe
    vars(ctx.items)["refresh"] = probe.timed_async("sweep", ctx.items.refresh)
    vars(ctx.models)["poll_once"] = probe.timed_async("alias_poll", ctx.models.poll_once)
    vars(ctx.sink)["poll"] = probe.timed("producer_poll", ctx.sink.poll)
    probe.start()


def _warm_on(items: ItemFeatureTable, model: Recommender) -> None:
    """Warm a newly loaded model on the live tables as they are now (loader thread)."""
    warm_model(model, trending=[item for item, _ in items.trending], item_features=items.features)


async def _warm_loaded(models: ModelCache, loader: Executor, table: LiveItemFeatures) -> None:
    """Warm every loaded model on a new feature table before it is swapped in: one round
    turns the table into each model's arrays (off the request path)."""
    loop = asyncio.get_running_loop()
    for model in models.loaded_models():
        call = functools.partial(warm_model, model, item_features=table, rounds=1)
        await loop.run_in_executor(loader, call)


def _redis_client(settings: Settings) -> Redis | RedisCluster:
    timeout = settings.serve.redis_timeout_ms / 1000
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if settings.redis.cluster:
        # The cluster client reads the slot map at its first command and follows MOVED and
        # failovers with its own retries; ping() (readiness) asks every node.
        seeds = seed_urls(settings.redis.url)  # one node, or several comma-separated
        others = [ClusterNode(*host_port(u)) for u in seeds[1:]]
        return RedisCluster.from_url(seeds[0], startup_nodes=others or None, **options)
    return Redis.from_url(
        settings.redis.url,
        health_check_interval=0,
        # A pooled connection from before a Redis restart fails its first command: one
        # retry on a fresh connection, or the first /readyz after the restart is a 503.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        **options,
    )


async def _poll_producer(sink: EventSink, interval_s: float = 0.1) -> None:
    """Serve the producer's delivery reports (requests only enqueue)."""
    while True:
        sink.poll()
        await asyncio.sleep(interval_s)
