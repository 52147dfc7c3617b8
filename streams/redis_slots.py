"""Runs the worker's Lua scripts on the node that owns their slot, on a standalone Redis and on
a Redis Cluster alike, and makes them durable on replicas before the caller goes on.

Every script call touches the keys of one Kafka partition, which share one hash slot
(:mod:`schemas.redis_keys`), so the call goes whole to the one master owning that slot. The
script and ``WAIT`` travel in one pipeline on one connection, because ``WAIT`` only waits for
the writes of the connection it is sent on.

Why ``WAIT``: Redis replication is asynchronous. A master that dies right after a script
would take the batch with it while the worker, told "applied", goes on to commit the Kafka
offsets: the promoted replica would then lack events Kafka no longer re-delivers. With
``STREAMREC_REDIS_MIN_REPLICAS_ACK=N`` a call counts as done only once N replicas hold it; a
shortfall is a :class:`~streams.errors.SinkUnavailable` (retried; the worker's cached
watermark is not moved, so the retry either sees the batch applied or applies it again on
the promoted replica). Exactly-once then survives the loss of any one master.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis import is_cluster_client
from streams.errors import SinkUnavailable

log = logging.getLogger(__name__)

# Out of memory counts as down: with maxmemory reached and nothing left to evict, writes
# fail until memory is freed or raised; the worker holds its commits and retries meanwhile
# (the script's first write is refused before it changed anything: still atomic).
DOWN = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, OSError)
# A failover or a resharding under way: the slot map is read again and the call retried.
MOVING = (MovedError, AskError, ClusterDownError, TryAgainError)


class SlotRunner:
    def __init__(
        self, client: Any, *, url: str, min_replicas: int = 0, wait_timeout_ms: int = 1000
    ) -> None:
        self.client, self.url = client, url
        self.cluster = is_cluster_client(client)
        self.min_replicas, self.wait_timeout_ms = min_replicas, wait_timeout_ms
        self._shas: dict[str, str] = {}

    def _node(self, key: str) -> Any:
        """The plain client of the master owning ``key`` (the client itself if standalone)."""
        if not self.cluster:
            return self.client
        node = self.client.get_node_from_key(key)
        if node.redis_connection is None:  # a node learnt from a refresh, not connected yet
            self.client.nodes_manager.initialize()
            node = self.client.get_node_from_key(key)
        return node.redis_connection

    def run(self, lua: str, key: str, args: list[Any], *, durable: bool = True) -> Any:
        """The reply of ``lua`` run with ``KEYS[1] = key`` (which names the slot) and
        ``args``; with ``durable``, only once ``min_replicas`` replicas have it."""
        sha = self._shas.get(lua)
        if sha is None:
            sha = self._shas[lua] = hashlib.sha1(lua.encode()).hexdigest()
        wait = durable and self.min_replicas > 0
        for _ in range(2):  # the second round after loading the script on that node
            try:
                node = self._node(key)
                with node.pipeline(transaction=False) as pipe:
                    pipe.evalsha(sha, 1, key, *args)
                    if wait:
                        pipe.execute_command("WAIT", self.min_replicas, self.wait_timeout_ms)
                    out = pipe.execute()
            except NoScriptError:
                node.script_load(lua)
                continue
            except MOVING as err:
                self._refresh()
                raise SinkUnavailable("redis", self.url, err) from err
            except DOWN as err:
                if self.cluster:
                    self._refresh()
                raise SinkUnavailable("redis", self.url, err) from err
            if wait and int(out[1]) < self.min_replicas:
                raise SinkUnavailable(
                    "redis",
                    self.url,
                    RuntimeError(
                        f"WAIT: {out[1]} of {self.min_replicas} replica(s) acknowledged the "
                        f"write to {key!r} within {self.wait_timeout_ms} ms"
                    ),
                )
            return out[0]
        raise SinkUnavailable("redis", self.url, RuntimeError("script kept missing on the node"))

    def _refresh(self) -> None:
        """Read the slot map again (a replica was promoted, or slots moved)."""
        if not self.cluster:
            return
        try:
            self.client.nodes_manager.initialize()
        except Exception as err:  # the next call's error says what is wrong
            log.debug("redis cluster slot map not refreshed: %s", err)
