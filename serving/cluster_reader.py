"""The request path's reads on a Redis Cluster, at the speed of :class:`RedisReader`.

One :class:`~serving.redis_reader.RedisReader` (one pipelined hiredis connection) per master,
and the cluster's slot map in a 16384-entry list: a request's commands are routed by the slot
of their key (the second word of each command). The key layout (:mod:`schemas.redis_keys`)
puts all of one user's keys in one slot, so a request is one round trip to one node, as on a
standalone Redis.

The slot map is read with ``CLUSTER SLOTS`` at the first request and again whenever a node
answers ``MOVED``/``ASK`` or a connection fails (a failover promoted a replica, or slots
moved); the request is then retried once on the new map. A refresh in progress is shared by
every request that needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio.connection import parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from core.redis import seed_urls
from serving.redis_reader import Command, RedisReader, retrieve_exception

log = logging.getLogger(__name__)

_REDIRECTS = ("MOVED ", "ASK ")


def command_slot(command: Command) -> int:
    """Hash slot of a command's key (the word after the command's name)."""
    key = command[1]
    return key_slot(key.encode() if isinstance(key, str) else bytes(key))


class ClusterReader:
    """``await reader.execute(*commands)`` like :class:`RedisReader`, on a Redis Cluster."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        seeds = seed_urls(url)  # one node, or several comma-separated (core.redis)
        opts = parse_url(seeds[0])
        self._scheme = url.split("://", 1)[0] if "://" in url else "redis"
        self._auth = ""
        if opts.get("password"):
            user = opts.get("username") or ""
            self._auth = f"{user}:{opts['password']}@" if user else f":{opts['password']}@"
        self._seeds = [
            (o.get("host", "localhost"), int(o.get("port", 6379)))
            for o in (parse_url(u) for u in seeds)
        ]
        self._connect_timeout = connect_timeout
        self._nodes: dict[tuple[str, int], RedisReader] = {}
        self._slots: list[tuple[str, int] | None] = []
        self._refreshing: asyncio.Task[None] | None = None

    def _node(self, addr: tuple[str, int]) -> RedisReader:
        node = self._nodes.get(addr)
        if node is None:
            url = f"{self._scheme}://{self._auth}{addr[0]}:{addr[1]}/0"
            node = self._nodes[addr] = RedisReader(url, connect_timeout=self._connect_timeout)
        return node

    def flush(self) -> None:
        """Every node's queued commands written now (:meth:`RedisReader.flush`)."""
        for node in self._nodes.values():
            node.flush()

    async def execute(self, *commands: Command, timeout: float | None = None) -> list[Any]:
        """Replies of ``commands`` in order (errors as :meth:`RedisReader.execute`)."""
        if not self._slots:
            await self._refresh(timeout)
        try:
            return await self._route(commands, timeout)
        except ResponseError as err:
            if not str(err).startswith(_REDIRECTS):
                raise
        except RedisConnectionError:
            pass
        # The map is stale (failover, resharding) or a master died: read it again, once.
        await self._refresh(timeout)
        return await self._route(commands, timeout)

    async def _route(self, commands: tuple[Command, ...], timeout: float | None) -> list[Any]:
        groups: dict[tuple[str, int], list[int]] = {}
        for i, command in enumerate(commands):
            addr = self._slots[command_slot(command)]
            if addr is None:
                raise RedisConnectionError("redis cluster: a slot of this request has no master")
            groups.setdefault(addr, []).append(i)
        if len(groups) == 1:  # the common case: one user's keys, one slot
            ((addr, _),) = groups.items()
            return await self._node(addr).execute(*commands, timeout=timeout)
        replies: list[Any] = [None] * len(commands)
        parts = list(groups.items())
        results = await asyncio.gather(
            *(
                self._node(addr).execute(*(commands[i] for i in idx), timeout=timeout)
                for addr, idx in parts
            )
        )
        for (_, idx), got in zip(parts, results, strict=True):
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies

    async def _refresh(self, timeout: float | None) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._read_slots())
            self._refreshing.add_done_callback(retrieve_exception)
        # shield: one caller timing out must not cancel the refresh the others wait for.
        await asyncio.wait_for(asyncio.shield(self._refreshing), timeout)

    async def _read_slots(self) -> None:
        known = list(dict.fromkeys([*self._nodes, *self._seeds]))
        last: Exception | None = None
        for addr in known:
            try:
                (reply,) = await self._node(addr).execute(("CLUSTER", "SLOTS"))
            except (RedisConnectionError, ResponseError, TimeoutError) as err:
                last = err
                continue
            slots: list[tuple[str, int] | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
            for start, end, master, *_replicas in reply:
                host = master[0] or addr[0]
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = (host, int(master[1]))
            self._slots = slots
            log.debug("redis cluster slot map read from %s:%d", *addr)
            return
        raise RedisConnectionError(f"redis cluster: no node answered CLUSTER SLOTS ({last})")

    async def aclose(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(BaseException):
                await self._refreshing
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()
