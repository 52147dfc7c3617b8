"""Setup of the serving benchmark (``bench/serving.py``): a model trained on MovieLens-100K
and published, Redis filled the way the stream processor would, and cleanup afterwards (on
the single-node stack or the Redis Cluster: ``connect`` picks the client)."""

from __future__ import annotations

import contextlib


def private_stack(**env: str):
    """Settings of one benchmark run (its own topic and key prefix, a file store in a new
    temporary folder) and the environment its servers get to read the same, plus ``env``.
    Returns (settings, environment, store folder): the caller removes the folder."""
    import os
    import tempfile
    import uuid
    from pathlib import Path

    from core.config import Settings

    tag = f"bench{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    settings = Settings().with_sections(
        kafka={"topic_prefix": tag}, redis={"key_prefix": tag}, storage={"url": f"file://{tmp}"}
    )
    server_env = {
        **os.environ,
        "STREAMREC_TOPIC_PREFIX": tag,
        "STREAMREC_REDIS_KEY_PREFIX": tag,
        "STREAMREC_STORAGE_URL": settings.storage.location,
        "STREAMREC_LOG_LEVEL": "WARNING",
        **env,
    }
    return settings, server_env, tmp


def prepare(settings, console, stacks: list) -> list[str]:
    """Train and publish a two-stage model on MovieLens-100K, and fill Redis the way the
    stream processor would (recent items per user, item stats, trending) on each of
    ``stacks`` (settings of the single-node and/or clustered stack). Returns users."""

    from core.kafka import ensure_topics
    from core.storage import open_store
    from ingest.movielens import load_movielens
    from models import ModelRegistry
    from schemas.manifest import TrainingData
    from schemas.split import temporal_test_mask
    from training.catalog import ItemCatalog
    from training.data import build_interactions
    from training.train import TrainConfig, fit_two_stage, generator_for

    ml = load_movielens(settings.cache_path)
    data = build_interactions(ml.interactions())
    held = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~held), data.subset(held)
    catalog = ItemCatalog.align(ml.catalog, data.item_ids, "movielens")
    console.print("training ALS + LightGBM on MovieLens-100K (train split)...")
    cfg = TrainConfig()
    gen, pop = generator_for(train, catalog, cfg)
    model, _ = fit_two_stage(gen, test, gen, pop, cfg)
    registry = ModelRegistry(open_store(settings.storage), settings.model_name)
    version = registry.publish(
        model, training_data=TrainingData(), params={}, metrics={}, notes="bench"
    ).version
    registry.promote(version, reason="bench", actor="bench")
    users: list[str] = []
    for stack in stacks:
        ensure_topics(stack.kafka)
        users = fill_redis(stack, ml)
    return users


def fill_redis(settings, ml) -> list[str]:
    """Redis as the stream processor would leave it after MovieLens-100K."""
    import numpy as np

    from core.redis import connect
    from schemas.redis_keys import RedisKeys
    from schemas.topics import partition_of

    r = connect(settings.redis.url, cluster=settings.redis.cluster, decode_responses=True)
    keys = RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions)
    pipe = r.pipeline(transaction=False)
    order = np.argsort(ml.ts, kind="stable")
    recent: dict[str, dict[str, float]] = {}
    # Per partition, as the stream processor keeps them: an event counts in its user's slot.
    stats: dict[tuple[int, str], list[float]] = {}
    totals: dict[str, int] = {}
    for n in order.tolist():  # the last 20 events per user become their Redis history
        user, item, ts = ml.users[n], ml.items[n], float(ml.ts[n])
        hist = recent.setdefault(user, {})
        hist[item] = ts
        if len(hist) > 20:
            hist.pop(min(hist, key=hist.__getitem__))
        s = stats.setdefault((partition_of(user, keys.partitions), item), [0, 0.0, 0.0])
        s[0], s[1], s[2] = s[0] + 1, s[1] + float(ml.ratings[n]), ts
        totals[item] = totals.get(item, 0) + 1
    for user, hist in recent.items():
        pipe.zadd(keys.user_slot(user).user_recent(user), hist)
    for (part, item), (n, total, last) in stats.items():
        slot = keys.slot(part)
        pipe.hset(
            slot.item_stats(item), mapping={"n_rate": n, "rating_sum": total, "last_seen": last}
        )
        pipe.zadd(slot.pop_all, {item: n})
    top = sorted(totals.items(), key=lambda x: -x[1])[:1000]
    pipe.zadd(keys.trending, dict(top))
    pipe.execute()
    return sorted(recent, key=int)


def cleanup(settings) -> None:
    from core.kafka import delete_topics
    from core.redis import connect

    # On a cluster, SCAN visits every master and DEL is split by slot.
    r = connect(settings.redis.url, cluster=settings.redis.cluster)
    keys = list(r.scan_iter(f"{settings.redis.key_prefix}:*", count=10_000))
    for i in range(0, len(keys), 5000):
        r.delete(*keys[i : i + 5000])
    with contextlib.suppress(Exception):  # cleanup must not hide the benchmark's own error
        delete_topics(settings.kafka, timeout=10)
