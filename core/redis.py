"""Redis clients for a standalone Redis or a Redis Cluster, chosen by one setting.

``STREAMREC_REDIS_CLUSTER=true`` makes every component speak the cluster protocol to
``STREAMREC_REDIS_URL``: any node of the cluster (the others are discovered), or several as
seeds, comma-separated in the URL's host part (``redis://:pw@node1:6379,node2:6379/0``), so
a start while one seed is down still finds the cluster. The key layout
(:mod:`schemas.redis_keys`) is the same either way: it is designed so that every script and
MULTI touches one hash slot.

A configuration that cannot work -- a node down at start, slots not covered, a standalone
Redis given the cluster flag or a cluster node without it -- raises :class:`RedisConfigError`
with one line that says what to change, instead of failing later with ``MOVED`` or
``CROSSSLOT`` on the first write.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from core.errors import RedisConfigError

__all__ = [
    "RedisConfigError",
    "check_kind",
    "connect",
    "host_port",
    "is_cluster_client",
    "seed_urls",
]


def seed_urls(url: str) -> list[str]:
    """``url`` once per host of its comma-separated host list (one URL: itself), each with
    the same scheme, credentials, database and options."""
    parts = urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return [url]
    prefix = f"{auth}@" if auth else ""
    return [
        urlunsplit(parts._replace(netloc=prefix + host.strip()))
        for host in hosts.split(",")
        if host.strip()
    ]


def host_port(url: str) -> tuple[str, int]:
    """Host and port of a one-host Redis URL (defaults: localhost, 6379)."""
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 6379


def connect(url: str, *, cluster: bool, check: bool = True, **options: Any) -> Any:
    """A ``redis.Redis`` (``cluster=False``) or ``redis.cluster.RedisCluster`` for ``url``.

    ``options`` go to the client (timeouts, ``decode_responses``...). With ``check`` the
    server is asked at once whether it is what the flag says (one round trip), so a wrong
    configuration fails here with :class:`RedisConfigError`."""
    seeds = seed_urls(url)
    if not cluster:
        if len(seeds) > 1:
            raise RedisConfigError(
                f"STREAMREC_REDIS_URL names {len(seeds)} hosts, which only a cluster takes: "
                "set STREAMREC_REDIS_CLUSTER=true, or name one host",
                url=url,
            )
        client = redis.Redis.from_url(url, **options)
        if check:
            _refuse_cluster_node(client, url)
        return client
    options.pop("health_check_interval", None)  # not a RedisCluster option
    try:
        # Building the client reads the slot map from the startup node.
        # Every seed is a startup node: the first that answers gives the slot map.
        # redis-py leaves ClusterNode.__init__ unannotated.
        others = [ClusterNode(*host_port(u)) for u in seeds[1:]]  # type: ignore[no-untyped-call]
        return RedisCluster.from_url(seeds[0], startup_nodes=others or None, **options)
    except redis.exceptions.RedisClusterException as err:
        text = str(err)
        if "not enabled" in text.lower():
            raise _not_a_cluster_node(url, url) from None
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


def check_kind(url: str, *, cluster: bool, timeout_s: float = 2.0) -> None:
    """Raise :class:`RedisConfigError` if the Redis at ``url`` answers but is not what the
    cluster flag says (for components that otherwise start while Redis is down and fall
    back, such as serving: a wrong flag would only show as fallbacks). Unreachable: no
    verdict, no error."""
    options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if not cluster:
        connect(url, cluster=False, **options).close()
        return
    for seed in seed_urls(url):
        client = redis.Redis.from_url(seed, **options)
        try:
            enabled = client.info("cluster").get("cluster_enabled")
        except (redis.ConnectionError, redis.TimeoutError, OSError, redis.ResponseError):
            continue  # try the next seed; none answering is an outage, not a config error
        finally:
            client.close()
        if not enabled:
            raise _not_a_cluster_node(seed, url)
        connect(url, cluster=True, **options).close()  # slots covered, map readable
        return


def _not_a_cluster_node(node: str, url: str) -> RedisConfigError:
    return RedisConfigError(
        f"redis at {node} is not a cluster node but STREAMREC_REDIS_CLUSTER=true: "
        "unset it, or point STREAMREC_REDIS_URL at a node of the cluster",
        url=url,
    )


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
