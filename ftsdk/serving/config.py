"""The options of ``ftsdk serve``, validated before any model is loaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from ftsdk.plugin.kinds import PluginConfig

#: names clients put in the ``model`` field: letters, digits and ``._:-/`` (vLLM and OpenAI ids look like this)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class ServeConfig(PluginConfig):
    """One base model, the adapters served over it, and the HTTP server's settings."""

    base: str = Field(
        description="The base model: an alias (smollm2-135m), a local HF folder or a .gguf file "
        "(the llamacpp backend needs a .gguf file).",
        min_length=1,
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Adapters served at start, name -> path (a PEFT adapter folder; a GGUF LoRA file for llamacpp).",
    )
    backend: Literal["transformers", "llamacpp"] = Field(
        "transformers", description="transformers+peft (any machine) or llama.cpp (GGUF base and LoRA files, CPU)."
    )
    served_name: str | None = Field(
        None, description="The base model's name in the `model` field (default: the alias or the file/folder name)."
    )
    host: str = Field(
        "127.0.0.1",
        description="Address to bind. Any address other than the loopback needs an api_key (or insecure).",
    )
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    max_context: int | None = Field(
        None, ge=16, description="Most prompt + completion tokens per request (default: the model's context length)."
    )
    default_max_tokens: int = Field(256, ge=1, description="Completion tokens when a request gives no max_tokens.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body in bytes; larger bodies get 413."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for generation (default: the library's choice).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="transformers backend: where the model runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="transformers backend: weight precision (auto: float32 on CPU)."
    )
    enable_admin: bool = Field(
        False, description="Serve POST /v1/adapters and DELETE /v1/adapters/{name}: load adapters from the "
        "server's disk and unload them at run time. Off unless asked for.",
    )
    api_key: SecretStr | None = Field(
        None, description="If set, every request but /health needs `Authorization: Bearer API_KEY`.", min_length=1
    )
    insecure: bool = Field(
        False, description="Allow a non-loopback host without an api_key (auth done by a proxy in front)."
    )
    max_queue: int = Field(
        32, ge=1, le=1024, description="Most completion requests held at once, running or waiting for the model; "
        "more get 429 with Retry-After.",
    )
    request_timeout: float = Field(
        300.0, gt=0, le=86_400, description="Most seconds a completion request may take, waiting included; "
        "then it stops generating and gets 504 (in-band for a stream that has started).",
    )
    max_batch_size: int = Field(
        8, ge=1, le=256, description="transformers backend: most whole (non-streamed) requests generated together "
        "in one batch; 1 generates them one at a time.",
    )
    batch_wait_ms: float = Field(
        10.0, ge=0, le=1000, description="transformers backend: how long the first waiting request waits for "
        "others to join its batch, in milliseconds (requests arriving while a batch runs join the next one).",
    )
    max_stop_chars: int = Field(
        512, ge=1, le=16_384, description="Most characters of all `stop` sequences of one request together; "
        "more get 400 (llama.cpp's stop matching costs grow with the square of the length).",
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, adapters: dict[str, str]) -> dict[str, str]:
        for name in adapters:
            check_model_name(name)
        return adapters

    @field_validator("served_name")
    @classmethod
    def _served_name(cls, name: str | None) -> str | None:
        return None if name is None else check_model_name(name)

    @property
    def base_name(self) -> str:
        """The name clients use for the base model."""
        if self.served_name:
            return self.served_name
        path = Path(self.base)
        return path.stem if path.suffix == ".gguf" else (path.name or self.base)


def check_model_name(name: str) -> str:
    """``name`` if it can be a model name, else ValueError (pydantic turns it into a validation error)."""
    if not MODEL_NAME.match(name):
        raise ValueError(f"'{name}' is not a usable model name: use letters, digits and ._:/- (at most 128)")
    return name
