"""The FastAPI application: OpenAI's chat completions, completions and models, adapter admin, health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from ftsdk.errors import FtsdkError
from ftsdk.serving.backends.base import Generation, GenerationJob, UnknownAdapterError
from ftsdk.serving.config import ServeConfig
from ftsdk.serving.errors import APIError, install_handlers, model_not_found, sse_error
from ftsdk.serving.limits import BodyLimit
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

_DONE = format_sse_event(data_str="[DONE]")


def create_app(registry: AdapterRegistry, config: ServeConfig) -> FastAPI:
    """The app serving ``registry``'s base model and adapters."""
    backend = registry.backend
    app = FastAPI(title="ftsdk serve", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    install_handlers(app)
    guard = [Depends(_bearer(config.api_key))] if config.api_key else []

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": backend.name, "models": len(registry.cards())}

    @app.get("/v1/models", dependencies=guard)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": registry.cards()}

    @app.post("/v1/chat/completions", dependencies=guard, response_model=None)
    async def chat(body: ChatCompletionRequest) -> Any:
        adapter = registry.resolve(body.model)
        messages = [m.as_template_message() for m in body.messages]
        ids = await run_in_threadpool(_input(backend.chat_prompt_ids), messages)
        job = _job(body, ids, adapter, backend.context_length, config.default_max_tokens, "messages")
        cid = new_id("chatcmpl")
        if body.stream:
            def chunk(text: str | None, generation: Generation | None) -> dict[str, Any]:
                if generation is None:
                    return chat_chunk(cid, body.model, {"content": text or ""}, None)
                return chat_chunk(cid, body.model, {}, generation.finish_reason)

            def usage_chunk(generation: Generation) -> dict[str, Any]:
                return chat_chunk(cid, body.model, {}, None, usage(len(ids), generation.completion_tokens), last=True)

            head = chat_chunk(cid, body.model, {"role": "assistant", "content": ""}, None)
            return await _stream(backend.start(job), body, head, chunk, usage_chunk)
        text, generation = await _complete(backend.start(job), body.model)
        return chat_completion(cid, body.model, text, generation.finish_reason,
                               usage(len(ids), generation.completion_tokens))

    @app.post("/v1/completions", dependencies=guard, response_model=None)
    async def completions(body: CompletionRequest) -> Any:
        adapter = registry.resolve(body.model)
        ids = await run_in_threadpool(_input(backend.text_prompt_ids), body.text)
        job = _job(body, ids, adapter, backend.context_length, config.default_max_tokens, "prompt")
        cid = new_id("cmpl")
        if body.stream:
            def chunk(text: str | None, generation: Generation | None) -> dict[str, Any]:
                finish = generation.finish_reason if generation else None
                return text_completion(cid, body.model, text or "", finish)

            def usage_chunk(generation: Generation) -> dict[str, Any]:
                return text_completion(cid, body.model, "", None, usage(len(ids), generation.completion_tokens), last=True)

            return await _stream(backend.start(job), body, None, chunk, usage_chunk)
        text, generation = await _complete(backend.start(job), body.model)
        return text_completion(cid, body.model, text, generation.finish_reason,
                               usage(len(ids), generation.completion_tokens))

    if config.allow_adapter_changes:
        @app.post("/v1/adapters", dependencies=guard)
        async def load_adapter(body: AdapterLoadRequest) -> dict[str, Any]:
            return await run_in_threadpool(registry.load, body.name, body.path)

        @app.delete("/v1/adapters/{name:path}", dependencies=guard)
        async def unload_adapter(name: str) -> dict[str, Any]:
            await run_in_threadpool(registry.unload, name)
            return {"id": name, "object": "model", "deleted": True}

    return app


def _bearer(key: str) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if request.headers.get("authorization", "") != f"Bearer {key}":
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer KEY`", code="invalid_api_key")

    return check


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
    """The generation a request asks for; 400 ``context_length_exceeded`` when it cannot fit the context."""
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
    return GenerationJob(ids, adapter, max_tokens, temperature, top_p, body.seed, body.stop_list)


async def _complete(generation: Generation, model: str) -> tuple[str, Generation]:
    try:
        text = await run_in_threadpool(lambda: "".join(generation.pieces))
    except UnknownAdapterError:
        raise model_not_found(model) from None
    finally:
        generation.cancelled.set()
    return text, generation


async def _stream(
    generation: Generation,
    body: ChatCompletionRequest | CompletionRequest,
    head: dict[str, Any] | None,
    chunk: Callable[[str | None, Generation | None], dict[str, Any]],
    usage_chunk: Callable[[Generation], dict[str, Any]],
) -> EventSourceResponse:
    """An SSE response: a chunk per text piece, a final chunk with the finish reason, usage if asked, [DONE].

    The first piece is awaited before the response starts, so failures before any text get a JSON error.
    """
    pieces = iterate_in_threadpool(generation.pieces)
    try:
        first = await anext(pieces, None)
    except UnknownAdapterError:
        generation.cancelled.set()
        raise model_not_found(body.model) from None
    except BaseException:
        generation.cancelled.set()
        raise

    async def events() -> AsyncIterator[bytes]:
        try:
            if head is not None:
                yield _event(head)
            if first is not None:
                yield _event(chunk(first, None))
                async for piece in pieces:
                    yield _event(chunk(piece, None))
            yield _event(chunk(None, generation))
            if body.include_usage:
                yield _event(usage_chunk(generation))
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band, as OpenAI does
            error = exc if isinstance(exc, APIError) else APIError(500, f"generation failed: {exc}", code="internal_error")
            yield format_sse_event(data_str=sse_error(error))
        finally:
            generation.cancelled.set()
        yield _DONE

    return EventSourceResponse(events())


def _event(payload: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(payload))
