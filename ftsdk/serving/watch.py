"""One completion request's life: its place in the queue, its deadline, and cancelling it when its client goes.

Generation runs in threads that cannot be interrupted from the event loop; what stops it is the
generation's ``cancelled`` flag, which the backends check before each token and while waiting for the
model. A :class:`Supervised` request sets that flag when the client disconnects or the deadline passes,
so an abandoned request stops generating, and one still waiting never starts.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from ftsdk.serving.backends.base import Generation
from ftsdk.serving.errors import APIError
from ftsdk.serving.limits import Admission

#: how often the client connection and the deadline are checked (seconds)
POLL_S = 0.1


class Supervised:
    """Admit a request (429 when the queue is full), then watch its generation until :meth:`close`."""

    def __init__(self, request: Request, admission: Admission, timeout_s: float) -> None:
        admission.enter()
        self._request = request
        self._admission = admission
        self._timeout_s = timeout_s
        self._started = time.monotonic()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        self.generation: Generation | None = None
        #: why the generation was cancelled: "timeout", "disconnected", or None
        self.reason: str | None = None

    def watch(self, generation: Generation) -> Generation:
        """Cancel ``generation`` when the client disconnects or the deadline passes; returns it."""
        self.generation = generation
        self._watcher = asyncio.get_running_loop().create_task(self._watch(generation))
        return generation

    async def _watch(self, generation: Generation) -> None:
        deadline = self._started + self._timeout_s
        while not generation.cancelled.is_set():
            if time.monotonic() >= deadline:
                self.reason = "timeout"
            elif await self._request.is_disconnected():
                self.reason = "disconnected"
            if self.reason:
                generation.cancelled.set()
                return
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def check(self) -> None:
        """Raise what the client gets when the generation was cancelled: 504 on timeout, 499 if it left."""
        if self.reason == "timeout":
            raise self.timeout_error()
        if self.reason == "disconnected":  # nobody reads this; uvicorn logs the status
            raise APIError(499, "The client closed the request.", code="client_closed_request")

    def timeout_error(self) -> APIError:
        return APIError(504, f"The request did not finish within this server's limit of {self._timeout_s:g} s "
                        "(waiting included). Ask for fewer tokens, or retry when the server is less busy.",
                        code="timeout")

    def close(self) -> None:
        """Stop watching, stop the generation if it still runs, give the queue place back (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.generation is not None:
            self.generation.close()
        self._admission.leave(time.monotonic() - self._started)
