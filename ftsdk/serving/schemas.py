"""Request bodies of the OpenAI API as pydantic models, and the response bodies the server sends.

Requests tolerate fields they do not know (OpenAI clients send more than this server uses); the
ones they know are validated, and options this server cannot honour are refused rather than ignored.
Numbers and flags are strict: ``"max_tokens": true`` or ``"seed": "7"`` get a 400, not a guess.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: UTF-16 surrogates: JSON can spell them (``"\\ud800"``), but alone they are not text and cannot be encoded
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_lone_surrogates(value: Any) -> Any:
    """``value`` (a parsed JSON body) if none of its strings, keys included, holds a lone surrogate."""
    pending = [value]
    while pending:  # iterative: nesting as deep as the JSON parser allows must not overflow the stack
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("the request holds a lone UTF-16 surrogate (such as \\ud800): send valid Unicode")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Tolerant):
    include_usage: bool = Field(False, strict=True)


class _Sampling(_Tolerant):
    """Options shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0, le=2, strict=True)
    top_p: float | None = Field(None, gt=0, le=1, strict=True)
    n: int | None = Field(None, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**64 - 1, strict=True)
    stream: bool | None = Field(False, strict=True)
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, body: Any) -> Any:
        return _no_lone_surrogates(body)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("this server returns one choice per request: n must be 1")
        return n

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        listed = [stop] if isinstance(stop, str) else stop or []
        if len(listed) > 4 or any(not s for s in listed):
            raise ValueError("give at most 4 non-empty stop sequences")
        return stop

    @model_validator(mode="after")
    def _no_unsupported(self) -> _Sampling:
        extra = self.model_extra or {}
        for name in ("logprobs", "top_logprobs", "echo", "suffix"):
            if extra.get(name) not in (None, False, 0, ""):
                raise ValueError(f"`{name}` is not supported by this server; leave it out")
        if extra.get("best_of") not in (None, 1):
            raise ValueError("`best_of` is not supported by this server; leave it out")
        return self

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(_Tolerant):
    type: Literal["text"]
    text: str


class ChatMessage(_Tolerant):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def as_template_message(self) -> dict[str, str]:
        """The message as chat templates take it: text content; OpenAI's `developer` role is a system message."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("give one prompt per request (a string, or a list holding one string)")
        return prompt

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class AdapterLoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="The name clients will put in the `model` field.")
    path: str = Field(min_length=1, description="The adapter on the server's disk.")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, body: Any) -> Any:
        return _no_lone_surrogates(body)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(cid: str, model: str, text: str, finish: str, use: dict[str, int]) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": use}


def chat_chunk(cid: str, model: str, delta: dict[str, str], finish: str | None,
               use: dict[str, int] | None = None, last: bool = False) -> dict[str, Any]:
    """A ``chat.completion.chunk``; the ``last`` one carries only usage (stream_options.include_usage)."""
    choices = [] if last else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "choices": choices}
    if last:
        chunk["usage"] = use
    return chunk


def text_completion(cid: str, model: str, text: str, finish: str | None,
                    use: dict[str, int] | None = None, last: bool = False) -> dict[str, Any]:
    """A ``text_completion`` body or stream chunk."""
    choices = [] if last else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    body: dict[str, Any] = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
                            "choices": choices}
    if use is not None:
        body["usage"] = use
    return body


def model_card(name: str, *, parent: str | None = None, root: str | None = None) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "ftsdk",
            "root": root or name, "parent": parent}
