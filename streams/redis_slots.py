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
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
# The marker each durable pipeline writes before its WAIT (see SlotRunner._run_on) expires.
ACK_TTL_MS = 600_000


class SlotRunner:
    def __init__(
        self, client: Any, *, url: str, min_replicas: int = 0, wait_timeout_ms: int = 1000
    ) -> None:
        self.client, self.url = client, url
        self.cluster = is_cluster_client(client)
        self.min_replicas, self.wait_timeout_ms = min_replicas, wait_timeout_ms
        self._shas: dict[str, str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._lock = threading.Lock()

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
        return self.run_many(lua, [(key, args)], durable=durable)[0]

    def run_many(
        self, lua: str, calls: Sequence[tuple[str, list[Any]]], *, durable: bool = True
    ) -> list[Any]:
        """The replies of ``lua`` run once per ``(key, args)`` of ``calls``, in order.

        Calls whose slots live on one master travel in one pipeline (and one ``WAIT``), and
        the masters are called at the same time: a batch of four partitions costs one round
        trip on a standalone Redis and on a cluster, not four ``WAIT``-bound ones in a row.
        Each call is still its own atomic script on its own slot, so a failure of one master
        leaves the others' calls applied; the caller's retry finds them ``SKIPPED``."""
        if not calls:
            return []
        sha = self._shas.get(lua)
        if sha is None:
            sha = self._shas[lua] = hashlib.sha1(lua.encode()).hexdigest()
        wait = durable and self.min_replicas > 0
        try:
            groups: dict[int, tuple[Any, list[int]]] = {}
            for i, (key, _) in enumerate(calls):
                node = self._node(key)
                groups.setdefault(id(node), (node, []))[1].append(i)
        except MOVING + DOWN as err:
            self._refresh()
            raise SinkUnavailable("redis", self.url, err) from err
        replies: list[Any] = [None] * len(calls)
        jobs = list(groups.values())
        if len(jobs) == 1:
            node, idx = jobs[0]
            self._run_on(node, lua, sha, [calls[i] for i in idx], wait, replies, idx)
            return replies
        futures = [
            self._executor(len(jobs)).submit(
                self._run_on, node, lua, sha, [calls[i] for i in idx], wait, replies, idx
            )
            for node, idx in jobs
        ]
        errors = [f.exception() for f in futures]  # every master answered (or failed)
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return replies

    def _executor(self, n: int) -> ThreadPoolExecutor:
        with self._lock:  # callers on two threads (the Redis thread, trending) build one
            if self._pool is None or self._pool_size < n:
                old = self._pool
                self._pool, self._pool_size = (
                    ThreadPoolExecutor(n, thread_name_prefix="redis-slots"),
                    n,
                )
                if old is not None:
                    old.shutdown(wait=False)
            return self._pool

    def _run_on(
        self,
        node: Any,
        lua: str,
        sha: str,
        calls: list[tuple[str, list[Any]]],
        wait: bool,
        replies: list[Any],
        idx: list[int],
    ) -> None:
        """``calls`` (all on ``node``'s master) in one pipeline, then WAIT; replies go to
        ``replies`` at ``idx``."""
        todo = list(range(len(calls)))
        for _ in range(2):  # the second round after loading the script on that node
            try:
                with node.pipeline(transaction=False) as pipe:
                    for j in todo:
                        key, args = calls[j]
                        pipe.evalsha(sha, 1, key, *args)
                    if wait:
                        # WAIT covers the writes of its own connection only. A call that
                        # wrote nothing (a retry finding its batch SKIPPED) would make WAIT
                        # return at once although the batch it found may not be on a replica
                        # yet: one write of our own orders this WAIT after it (replication is
                        # one ordered stream per master).
                        pipe.set(calls[todo[0]][0] + ":ack", 1, px=ACK_TTL_MS)
                        pipe.execute_command("WAIT", self.min_replicas, self.wait_timeout_ms)
                    out = pipe.execute(raise_on_error=False)
            except MOVING as err:
                self._refresh()
                raise SinkUnavailable("redis", self.url, err) from err
            except DOWN as err:
                if self.cluster:
                    self._refresh()
                raise SinkUnavailable("redis", self.url, err) from err
            missing = []
            for j, reply in zip(todo, out, strict=False):
                if isinstance(reply, NoScriptError):
                    missing.append(j)
                elif isinstance(reply, MOVING):
                    self._refresh()
                    raise SinkUnavailable("redis", self.url, reply)
                elif isinstance(reply, DOWN):  # out of memory: held and retried, as down
                    raise SinkUnavailable("redis", self.url, reply)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    replies[idx[j]] = reply
            if wait and int(out[-1]) < self.min_replicas:
                raise SinkUnavailable(
                    "redis",
                    self.url,
                    RuntimeError(
                        f"WAIT: {out[-1]} of {self.min_replicas} replica(s) acknowledged the "
                        f"write to {calls[0][0]!r} within {self.wait_timeout_ms} ms"
                    ),
                )
            if not missing:
                return
            node.script_load(lua)
            todo = missing
        raise SinkUnavailable("redis", self.url, RuntimeError("script kept missing on the node"))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _refresh(self) -> None:
        """Read the slot map again (a replica was promoted, or slots moved)."""
        if not self.cluster:
            return
        try:
            self.client.nodes_manager.initialize()
        except Exception as err:  # the next call's error says what is wrong
            log.debug("redis cluster slot map not refreshed: %s", err)
