"""Request bodies over ``STREAMREC_SERVE_MAX_BODY_BYTES`` are refused with 413 before they
are read: by their ``Content-Length`` up front, or counted as a chunked body streams in (the
request is cut off at the first chunk past the limit). uvicorn buffers at most ~64 KiB of an
unread body and discards what arrives after the answer, so a 300 MB upload costs no memory.

Plain ASGI (BaseHTTPMiddleware would cost more than some of our endpoints); a request with
neither ``Content-Length`` nor ``Transfer-Encoding`` -- every GET -- passes straight through."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised into the app's body read; the middleware answers 413 in its place."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._refusal = orjson.dumps(
            {
                "detail": f"request body larger than {max_bytes} bytes "
                "(STREAMREC_SERVE_MAX_BODY_BYTES); it was not read"
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared.isdigit():
            # The server delivers no more than the declared length (uvicorn checks it).
            if int(declared) > self.max_bytes:
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
        elif chunked or declared is not None:
            await self._counted(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to the failed read; the 413 replaces it
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._refusal)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._refusal})
