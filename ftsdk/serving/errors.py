"""OpenAI-style error bodies ``{"error": {"message", "type", "param", "code"}}`` for every failure.

What a body says is bounded and scrubbed: messages are cut to :data:`MAX_MESSAGE_CHARS`, absolute paths
of the server's disk are replaced by ``<path>``, and unexpected failures answer a generic 500 whose details
(the traceback) go to the server's log only, under a reference the body names.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("ftsdk.serve")

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
#: longest message an error body carries (a huge `model` field is not echoed back whole)
MAX_MESSAGE_CHARS = 500
#: absolute paths: POSIX with at least two parts (/home/me/x), or a Windows drive path (C:\x)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/\\-])/(?:[^\s/'\"`,:;()\[\]{}<>|]+/)+[^\s/'\"`,:;()\[\]{}<>|]*"
                            r"|\b[A-Za-z]:\\[^\s'\"`,:;()\[\]{}<>|]*")


def redact(text: str) -> str:
    """``text`` safe to send: absolute paths replaced, cut to MAX_MESSAGE_CHARS, lone surrogates replaced."""
    text = _ABSOLUTE_PATH.sub("<path>", text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text.encode("utf-8", "replace").decode("utf-8")


class APIError(Exception):
    """An error the API reports to the client with ``status`` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        param = None if self.param is None else redact(self.param)
        return {"error": {"message": redact(self.message), "type": kind, "param": param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist.", code="model_not_found", param="model")


def internal_error(request: Request, exc: BaseException) -> APIError:
    """Log ``exc`` with its traceback under a new reference; the generic 500 that names the reference."""
    reference = uuid.uuid4().hex[:12]
    log.error("request %s %s failed (reference %s)", request.method, request.url.path, reference, exc_info=exc)
    return APIError(500, f"The server failed on this request (reference {reference}); its log has the details.",
                    code="internal_error")


def install_handlers(app: FastAPI) -> None:
    """Turn every exception into an OpenAI-style JSON error (4xx for bad input, 500 only for our bugs)."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI answers 400 only for bodies its JSON parser gave up on (nesting too deep, too many digits)
        codes = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        return APIError(exc.status_code, str(exc.detail), code=codes.get(exc.status_code)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request, exc).response()


def validation_error(errors: Any) -> APIError:
    """One 400 error from pydantic's error list: malformed JSON, or the first field that failed validation."""
    errors = list(errors)
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return APIError(400, f"The request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                        code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    text = str(first["msg"]).removeprefix("Value error, ")
    message = f"{param}: {text}" if param else text
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return APIError(400, message, code="invalid_value" if param else "invalid_body", param=param)


def sse_error(error: APIError) -> str:
    """The JSON of an error event sent inside a stream that had already started."""
    return json.dumps(error.body())
