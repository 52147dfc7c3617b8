"""A lean asyncio Redis client for the reads on the request path.

One connection per worker; the commands of concurrent requests are written to it as they
come (pipelined: Redis answers in order) and the replies parsed by hiredis in the
protocol's callback. A request costs one ``transport.write`` and one future, ~15 µs of
Python, where a redis-py asyncio pipeline costs ~100 µs (connection pool checkout, retry
wrapper, timeout context, per-command objects) -- a tenth of our whole request.

Everything off the request path (feedback dedupe, the item-feature sweep, readiness) keeps
using redis-py. Errors are redis-py's (``ConnectionError``, ``ResponseError``) and the
builtin ``TimeoutError``, so callers handle one family.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Command = tuple[str, ...]


def pack(commands: tuple[Command, ...]) -> bytes:
    """RESP encoding of ``commands`` (arrays of bulk strings)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            raw = arg.encode() if isinstance(arg, str) else bytes(arg)
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Pending:
    __slots__ = ("future", "left", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], n: int) -> None:
        self.future = future
        self.left = n
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = hiredis.Reader(encoding="utf-8")
        self.pending: deque[_Pending] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._out: list[bytes] = []  # commands of this loop iteration, not yet written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection hands its protocol a Transport; asyncio types it BaseTransport.
        self.transport = transport  # type: ignore[assignment]

    def send(self, commands: tuple[Command, ...], future: asyncio.Future[list[Any]]) -> None:
        self.pending.append(_Pending(future, len(commands)))
        # Written once per loop iteration for all the requests that ran in it: one write
        # (and one read on Redis' side) for a burst instead of one each (issue 14).
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(pack(commands))

    def flush(self) -> None:
        """Writes the commands queued in this loop iteration now (the model batcher calls it
        before it holds the loop: their replies arrive meanwhile)."""
        if not self._out:
            return
        data, self._out = b"".join(self._out), []
        if not self.lost:
            # None only before connection_made, and open() returns after it: no check.
            self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            while (reply := self.parser.gets()) is not False:
                head = self.pending[0]
                head.replies.append(reply)
                head.left -= 1
                if head.left == 0:
                    self.pending.popleft()
                    # A request that timed out still owns its replies (order); drop them.
                    if not head.future.done():
                        head.future.set_result(head.replies)
        except (hiredis.ProtocolError, IndexError) as err:
            self.transport.close()  # type: ignore[union-attr]  # data came: connected
            self._fail(RedisConnectionError(f"redis protocol error: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"redis connection lost: {exc or 'closed by server'}"))

    def _fail(self, err: Exception) -> None:
        self.lost = True
        while self.pending:
            head = self.pending.popleft()
            if not head.future.done():
                head.future.set_exception(err)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("redis read timed out"))


def retrieve_exception(task: asyncio.Task[Any]) -> None:
    # When every caller gave up before the connect failed (their budget ran out first), no
    # one awaits the task: read its exception here, or asyncio logs "Task exception was
    # never retrieved" for each failed attempt during an outage.
    if not task.cancelled():
        task.exception()


class RedisReader:
    """``await reader.execute(("ZREVRANGE", key, "0", "-1"), ...)`` -> the replies, in order.
    Connects lazily (one connect at a time) and reconnects after a failure."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        opts = parse_url(url)
        self._path: str | None = opts.get("path")
        self._host: str = opts.get("host", "localhost")
        self._port: int = int(opts.get("port", 6379))
        self._ssl = opts.get("connection_class") is SSLConnection
        setup: list[Command] = []
        if opts.get("password"):
            user = opts.get("username")
            setup.append(("AUTH", user, opts["password"]) if user else ("AUTH", opts["password"]))
        if int(opts.get("db", 0) or 0):
            setup.append(("SELECT", str(opts["db"])))
        self._setup = tuple(setup)
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def execute(self, *commands: Command, timeout: float | None = None) -> list[Any]:
        """Replies of ``commands`` in order; raises ``ResponseError`` for an error reply,
        ``redis.exceptions.ConnectionError`` when Redis is unreachable and TimeoutError
        past ``timeout`` seconds."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connection(timeout)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        protocol.send(commands, future)
        # A timer on the future, not asyncio.wait_for: that wraps the await in a Task.
        timer = loop.call_later(timeout, _expire, future) if timeout is not None else None
        try:
            replies = await future
        finally:
            if timer is not None:
                timer.cancel()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
        return replies

    def flush(self) -> None:
        """The commands queued in this loop iteration, written now (:meth:`_Protocol.flush`)."""
        if self._protocol is not None:
            self._protocol.flush()

    async def _connection(self, timeout: float | None) -> _Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(retrieve_exception)
        # shield: one caller giving up must not cancel the connect the others wait for.
        return await asyncio.wait_for(asyncio.shield(self._connecting), timeout)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path:
                    _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    ctx = ssl.create_default_context() if self._ssl else None
                    _, protocol = await loop.create_connection(
                        _Protocol, self._host, self._port, ssl=ctx
                    )
                if self._setup:
                    future: asyncio.Future[list[Any]] = loop.create_future()
                    protocol.send(self._setup, future)
                    for reply in await future:
                        if isinstance(reply, hiredis.ReplyError):
                            raise RedisConnectionError(f"redis refused the connection: {reply}")
        except BaseException as err:
            # Connected but not set up (a hung server, a refused AUTH): not ours to keep.
            if protocol is not None and protocol.transport is not None:
                protocol.transport.close()
            if isinstance(err, OSError | TimeoutError):
                where = self._path or f"{self._host}:{self._port}"
                raise RedisConnectionError(f"cannot connect to redis at {where}: {err}") from err
            raise
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
