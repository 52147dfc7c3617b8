"""Redis clients for a standalone Redis or a Redis Cluster, chosen by one setting.

``STREAMREC_REDIS_CLUSTER=true`` makes every component speak the cluster protocol to
``STREAMREC_REDIS_URL`` (any node of the cluster; the others are discovered). The key layout
(:mod:`schemas.redis_keys`) is the same either way: it is designed so that every script and
MULTI touches one hash slot.

A configuration that cannot work -- a node down at start, slots not covered, a standalone
Redis given the cluster flag or a cluster node without it -- raises :class:`RedisConfigError`
with one line that says what to change, instead of failing later with ``MOVED`` or
``CROSSSLOT`` on the first write.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from core.errors import RedisConfigError

__all__ = ["RedisConfigError", "connect", "is_cluster_client"]


def connect(url: str, *, cluster: bool, check: bool = True, **options: Any) -> Any:
    """A ``redis.Redis`` (``cluster=False``) or ``redis.cluster.RedisCluster`` for ``url``.

    ``options`` go to the client (timeouts, ``decode_responses``...). With ``check`` the
    server is asked at once whether it is what the flag says (one round trip), so a wrong
    configuration fails here with :class:`RedisConfigError`."""
    if not cluster:
        client = redis.Redis.from_url(url, **options)
        if check:
            _refuse_cluster_node(client, url)
        return client
    options.pop("health_check_interval", None)  # not a RedisCluster option
    try:
        # Building the client reads the slot map from the startup node.
        return RedisCluster.from_url(url, **options)
    except redis.exceptions.RedisClusterException as err:
        text = str(err)
        if "not enabled" in text.lower():
            raise RedisConfigError(
                f"redis at {url} is not a cluster node but STREAMREC_REDIS_CLUSTER=true: "
                "unset it, or point STREAMREC_REDIS_URL at a node of the cluster",
                url=url,
            ) from None
        if "slots" in text.lower() and "covered" in text.lower():
            raise RedisConfigError(
                f"redis cluster at {url} does not cover all 16384 hash slots "
                "(a master is down or the cluster is not formed): check `redis-cli -p PORT "
                "cluster info`",
                url=url,
            ) from None
        if "cannot be connected" in text.lower():
            raise RedisConfigError(
                f"redis cluster at {url} is unreachable: no node answers (is it up?)", url=url
            ) from None
        raise RedisConfigError(f"redis cluster at {url}: {text}", url=url) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
        raise RedisConfigError(
            f"redis cluster at {url} is unreachable ({err}): is the node up?", url=url
        ) from None


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def _refuse_cluster_node(client: redis.Redis, url: str) -> None:
    """A cluster node used as a standalone Redis answers ``MOVED`` for most keys: say so now.
    Unreachable servers are left to the caller's own retry/outage handling."""
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return
    except redis.ResponseError:
        return  # INFO disabled or renamed: nothing to judge by
    if enabled:
        raise RedisConfigError(
            f"redis at {url} is a cluster node: set STREAMREC_REDIS_CLUSTER=true", url=url
        )
