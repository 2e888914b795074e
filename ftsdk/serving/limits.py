"""Limits on what requests may take: body size (413) and room in the completion queue (429).

FastAPI's own ``max_body_size`` answers a too-large declared Content-Length with plain text
(Starlette's limiter replaces any response), so the body limit is applied here, as ASGI middleware.
"""

from __future__ import annotations

import math

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ftsdk.serving.errors import APIError

#: how many times the limit a too-large body is read (and dropped) so the client gets to read the 413
DRAIN_FACTOR = 16


class BodyLimit:
    """413 for bodies over ``limit`` bytes, declared (Content-Length) or streamed (chunked).

    The rest of a too-large body is read and dropped (up to ``DRAIN_FACTOR`` times the limit) before
    answering: a client still sending would otherwise see a broken pipe instead of the error.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive, {"more_body": True}, 0)
            await self._error().response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._drain(receive, message, seen)
                raise HTTPException(413, self._error().message)  # the app's handler answers it in JSON
            return message

        await self.app(scope, counted, send)

    async def _drain(self, receive: Receive, message: Message, seen: int) -> None:
        while message.get("more_body") and message.get("type", "http.request") == "http.request":
            if seen > self.limit * DRAIN_FACTOR:
                return
            message = await receive()
            seen += len(message.get("body", b""))

    def _error(self) -> APIError:
        return APIError(413, f"The request body is larger than this server's limit of {self.limit} bytes.",
                        code="request_too_large")


class Admission:
    """Counts the completion requests the server holds (generating or waiting); 429 once ``limit`` are held.

    Used from the event loop only, so plain counters suffice. ``Retry-After`` is the average time the
    recent requests took (at least 1 s): roughly how long until the queue has moved on.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._average_s = 1.0

    def enter(self) -> None:
        """Take a place, or raise the 429 ``queue_full`` error."""
        if self.held >= self.limit:
            retry = min(60, max(1, math.ceil(self._average_s)))
            raise APIError(429, f"The server is busy: {self.held} requests are queued, its limit. "
                           f"Retry in {retry} s.", code="queue_full", headers={"Retry-After": str(retry)})
        self.held += 1

    def leave(self, took_s: float) -> None:
        """Give the place back; ``took_s`` updates the average behind Retry-After."""
        self.held -= 1
        self._average_s = 0.8 * self._average_s + 0.2 * took_s
