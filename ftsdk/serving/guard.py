"""The API key check: ``Authorization: Bearer KEY`` on every request but /health, compared in constant time."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ftsdk.serving.errors import APIError

#: paths anyone may call without a key
OPEN_PATHS = frozenset({"/health"})


class ApiKeyGuard:
    """401 ``invalid_api_key`` for every request (but OPEN_PATHS) without ``Authorization: Bearer KEY``.

    ASGI middleware, so a request is refused before its body is read or parsed.
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = key.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope["path"] in OPEN_PATHS or self.allows(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        error = APIError(401, "missing or wrong API key: send `Authorization: Bearer KEY`", code="invalid_api_key",
                         headers={"WWW-Authenticate": "Bearer"})
        await error.response()(scope, receive, send)

    def allows(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # Starlette decodes headers as latin-1, so this gives back the bytes the client sent
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), self.expected)
