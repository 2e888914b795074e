"""The FastAPI application: OpenAI's chat completions, completions and models, adapter admin, health.

Every completion request takes a place in a bounded queue (429 when full), has a deadline (504), and stops
generating when its client disconnects (:mod:`ftsdk.serving.watch`). With an API key set, requests are
checked before their body is read (:mod:`ftsdk.serving.guard`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.types import Receive, Scope, Send

from ftsdk.plugin.errors import FtsdkError
from ftsdk.serving.backends.base import Generation, GenerationJob, UnknownAdapterError
from ftsdk.serving.config import ServeConfig
from ftsdk.serving.errors import APIError, install_handlers, internal_error, model_not_found, sse_error
from ftsdk.serving.guard import ApiKeyGuard
from ftsdk.serving.limits import Admission, BodyLimit
from ftsdk.serving.registry import AdapterRegistry
from ftsdk.serving.schemas import (
    AdapterLoadRequest,
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_completion,
    new_id,
    text_completion,
    usage,
)
from ftsdk.serving.watch import Supervised

_DONE = format_sse_event(data_str="[DONE]")
#: temperatures below this sample greedily (dividing logits by ~0 overflows them)
GREEDY_BELOW = 1e-5
#: worker threads beyond the queue's places (each held request may wait in one): tokenizing, adapter loads
SPARE_THREADS = 16


@dataclass(frozen=True)
class _Replies:
    """How one endpoint writes its answers: whole, or as stream chunks (head, text pieces, end, usage)."""

    whole: Callable[[str, Generation, int], dict[str, Any]]
    head: dict[str, Any] | None
    piece: Callable[[str], dict[str, Any]]
    end: Callable[[Generation], dict[str, Any]]
    usage: Callable[[Generation, int], dict[str, Any]]


def _chat_replies(model: str) -> _Replies:
    cid = new_id("chatcmpl")
    return _Replies(
        whole=lambda text, g, prompt: chat_completion(cid, model, text, g.finish_reason,
                                                      usage(prompt, g.completion_tokens)),
        head=chat_chunk(cid, model, {"role": "assistant", "content": ""}, None),
        piece=lambda text: chat_chunk(cid, model, {"content": text}, None),
        end=lambda g: chat_chunk(cid, model, {}, g.finish_reason),
        usage=lambda g, prompt: chat_chunk(cid, model, {}, None, usage(prompt, g.completion_tokens), last=True),
    )


def _text_replies(model: str) -> _Replies:
    cid = new_id("cmpl")
    return _Replies(
        whole=lambda text, g, prompt: text_completion(cid, model, text, g.finish_reason,
                                                      usage(prompt, g.completion_tokens)),
        head=None,
        piece=lambda text: text_completion(cid, model, text, None),
        end=lambda g: text_completion(cid, model, "", g.finish_reason),
        usage=lambda g, prompt: text_completion(cid, model, "", None, usage(prompt, g.completion_tokens), last=True),
    )


def create_app(registry: AdapterRegistry, config: ServeConfig) -> FastAPI:
    """The app serving ``registry``'s base model and adapters."""
    backend = registry.backend
    admission = Admission(config.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, config.max_queue + SPARE_THREADS)
        yield

    app = FastAPI(title="ftsdk serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    if config.api_key is not None:
        app.add_middleware(ApiKeyGuard, key=config.api_key.get_secret_value())  # outermost: before the body
    install_handlers(app)

    async def complete(request: Request, body: ChatCompletionRequest | CompletionRequest,
                       render: Callable[[Any], list[int]], value: Any, param: str, replies: _Replies) -> Any:
        """Admit, tokenize, generate and answer one completion request, whole or streamed."""
        adapter = registry.resolve(body.model)
        _check_stops(body.stop_list, config.max_stop_chars)
        supervised = Supervised(request, admission, config.request_timeout)
        streaming = False
        try:
            ids = await run_in_threadpool(_input(render), value)
            job = _job(body, ids, adapter, backend.context_length, config.default_max_tokens, param)
            generation = supervised.watch(backend.start(job))
            if body.stream:
                response = await _stream(request, generation, supervised, body, replies, len(ids))
                streaming = True  # the response closes `supervised` once sent
                return response
            try:
                text = await run_in_threadpool(lambda: "".join(generation.pieces))
            except UnknownAdapterError:
                raise model_not_found(body.model) from None
            supervised.check()
            return replies.whole(text, generation, len(ids))
        finally:
            if not streaming:
                supervised.close()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": backend.name, "models": len(registry.cards()), "queued": admission.held}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": registry.cards()}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        messages = [m.as_template_message() for m in body.messages]
        return await complete(request, body, backend.chat_prompt_ids, messages, "messages", _chat_replies(body.model))

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await complete(request, body, backend.text_prompt_ids, body.text, "prompt", _text_replies(body.model))

    if config.enable_admin:
        @app.post("/v1/adapters")
        async def load_adapter(body: AdapterLoadRequest) -> dict[str, Any]:
            return await run_in_threadpool(registry.load, body.name, body.path)

        @app.delete("/v1/adapters/{name:path}")
        async def unload_adapter(name: str) -> dict[str, Any]:
            await run_in_threadpool(registry.unload, name)
            return {"id": name, "object": "model", "deleted": True}
    else:
        @app.api_route("/v1/adapters", methods=["POST"])
        @app.api_route("/v1/adapters/{name:path}", methods=["DELETE"])
        async def admin_disabled() -> None:
            raise APIError(403, "Loading and unloading adapters at run time is off on this server; "
                           "start it with --enable-admin to allow it.", code="admin_disabled")

    return app


def _check_stops(stops: list[str], limit: int) -> None:
    """400 when the stop sequences are longer, together, than the server allows."""
    total = sum(len(stop) for stop in stops)
    if total > limit:
        raise APIError(400, f"stop: the stop sequences hold {total} characters together; this server takes at "
                       f"most {limit}.", code="invalid_value", param="stop")


def _input(render: Callable[[Any], list[int]]) -> Callable[[Any], list[int]]:
    """``render`` with its input errors (a chat template refusing the messages) turned into 400s."""
    def run(value: Any) -> list[int]:
        try:
            return render(value)
        except FtsdkError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None

    return run


def _job(body: ChatCompletionRequest | CompletionRequest, ids: list[int], adapter: str | None, context: int,
         default_max: int, param: str) -> GenerationJob:
    """The generation a request asks for; 400 when the prompt is empty or it cannot fit the context."""
    if not ids:
        raise APIError(400, f"The {param} has no tokens: give some text to continue.", code="invalid_value",
                       param=param)
    wanted = body.token_limit
    max_tokens = wanted if wanted is not None else min(default_max, context - len(ids))
    if len(ids) >= context or len(ids) + max_tokens > context:
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{len(ids) + max(max_tokens, 0)} tokens ({len(ids)} in the {param}, {max(max_tokens, 0)} in the "
            f"completion). Please reduce the length of the {param} or completion.",
            code="context_length_exceeded",
            param=param,
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    return GenerationJob(ids, adapter, max_tokens, temperature if temperature >= GREEDY_BELOW else 0.0, top_p,
                         body.seed, body.stop_list, stream=bool(body.stream))


class _SupervisedStream(EventSourceResponse):
    """An SSE response that closes its request's supervision once sent, or once sending failed."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(events)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _stream(request: Request, generation: Generation, supervised: Supervised,
                  body: ChatCompletionRequest | CompletionRequest, replies: _Replies,
                  prompt_tokens: int) -> EventSourceResponse:
    """An SSE response: a chunk per text piece, a final chunk with the finish reason, usage if asked, [DONE].

    The first piece is awaited before the response starts (waiting in the queue included), so failures
    before any text, a timeout among them, get a JSON error; later ones are sent in-band, as OpenAI does.
    """
    pieces = iterate_in_threadpool(generation.pieces)
    try:
        first = await anext(pieces, None)
    except UnknownAdapterError:
        raise model_not_found(body.model) from None
    supervised.check()

    async def events() -> AsyncIterator[bytes]:
        try:
            if replies.head is not None:
                yield _event(replies.head)
            if first is not None:
                yield _event(replies.piece(first))
                async for piece in pieces:
                    yield _event(replies.piece(piece))
            supervised.check()
            yield _event(replies.end(generation))
            if body.include_usage:
                yield _event(replies.usage(generation, prompt_tokens))
        except APIError as error:
            yield format_sse_event(data_str=sse_error(error))
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band, details to the log
            yield format_sse_event(data_str=sse_error(internal_error(request, exc)))
        yield _DONE

    return _SupervisedStream(events(), supervised.close)


def _event(payload: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(payload))
