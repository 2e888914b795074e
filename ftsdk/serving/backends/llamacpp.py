"""llama.cpp (llama-cpp-python): a GGUF base loaded once, GGUF LoRA adapters switched per request.

``Llama(lora_path=...)`` applies one LoRA for the model's life; here every adapter is loaded with
``llama_adapter_lora_init`` on the one base and put on the context with ``llama_set_adapters_lora``
(none for the base) before each request. The KV cache is reset when the adapter changes, since
llama-cpp-python would otherwise reuse a cached prompt prefix computed under another adapter.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ftsdk.plugin.errors import ConfigError, DataError, ModelLoadError
from ftsdk.serving.backends.base import (
    Backend,
    Generation,
    GenerationJob,
    UnknownAdapterError,
    wait_for_model,
)
from ftsdk.serving.config import ServeConfig

#: llama.cpp seeds are 32-bit and 0xFFFFFFFF means "random": request seeds (64-bit) are folded below it
LLAMA_SEED_RANGE = 0xFFFFFFFF


class LlamaCppBackend(Backend):
    name: ClassVar[str] = "llamacpp"
    requires: ClassVar[tuple[str, ...]] = ("llama_cpp",)
    install_hint: ClassVar[str] = 'pip install "ftsdk[gguf]" (it compiles llama.cpp)'

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(config)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from ftsdk.gguf.runtime import load_gguf

        self.llm: Any = load_gguf(config.base, n_ctx=config.max_context or 0, logits_all=False,
                                  n_threads=config.threads)
        self._context = self.llm.n_ctx()
        self._adapters: dict[str, Any] = {}
        self._active: str | None = None
        self._lock = threading.Lock()
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._chat = None
        if template:
            def text(token: int) -> str:
                return self.llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

            self._chat = Jinja2ChatFormatter(template, eos_token=text(self.llm.token_eos()),
                                             bos_token=text(self.llm.token_bos()))

    @classmethod
    def check_base(cls, base: str) -> None:
        if not (base.endswith(".gguf") and Path(base).expanduser().is_file()):
            raise ConfigError(f"the llamacpp backend serves a .gguf file, and '{base}' is not one",
                              hint="convert a model folder with ftsdk.gguf (or `ftsdk quantize ... gguf`) first")

    @classmethod
    def check_adapter(cls, path: str) -> Path:
        file = Path(path).expanduser()
        if not (file.suffix == ".gguf" and file.is_file()):
            raise ConfigError(f"adapter '{path}' is not a GGUF LoRA file",
                              hint="convert a PEFT LoRA folder with ftsdk.gguf.lora.convert_adapter")
        return file

    @property
    def context_length(self) -> int:
        return self._context

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        from jinja2 import TemplateError

        if self._chat is None:
            raise DataError("the GGUF base has no chat template (tokenizer.chat_template)",
                            hint="use /v1/completions instead")
        try:
            prompt = self._chat(messages=messages).prompt
        except (TemplateError, ValueError) as exc:
            raise DataError(f"the chat template refused these messages: {exc}") from None
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def text_prompt_ids(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def load_adapter(self, name: str, path: Path) -> None:
        import llama_cpp

        with self._lock:
            adapter = llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode("utf-8"))
            if not adapter:
                raise ModelLoadError(f"llama.cpp could not load the LoRA '{name}' from {path}",
                                     hint="the GGUF LoRA must be made for this base model (same architecture and sizes)")
            self._adapters[name] = adapter

    def unload_adapter(self, name: str) -> None:
        import llama_cpp

        with self._lock:
            adapter = self._adapters.pop(name, None)
            if adapter is None:
                return
            if self._active == name:
                self._apply(None)
            llama_cpp.llama_adapter_lora_free(adapter)

    def _apply(self, name: str | None) -> None:
        """Put adapter ``name`` (None: no adapter) on the context; call with the lock held."""
        import llama_cpp

        if name is not None and name not in self._adapters:
            raise UnknownAdapterError(name)
        if name == self._active:
            return
        chosen = [self._adapters[name]] if name is not None else []
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * len(chosen))(*chosen)
        scales = (ctypes.c_float * len(chosen))(*([1.0] * len(chosen)))
        if llama_cpp.llama_set_adapters_lora(self.llm.ctx, adapters, len(chosen), scales):
            raise ModelLoadError(f"llama.cpp refused to apply adapter '{name}'")
        self.llm.reset()  # the cached prompt was computed under the previous adapter
        self._active = name

    def start(self, job: GenerationJob) -> Generation:
        generation = Generation(pieces=iter(()))
        generation.pieces = self._pieces(job, generation)
        return generation

    def _pieces(self, job: GenerationJob, generation: Generation) -> Iterator[str]:
        from llama_cpp import LogitsProcessorList, StoppingCriteriaList

        steps = 0

        def count(input_ids: Any, scores: Any) -> Any:
            nonlocal steps
            steps += 1
            return scores

        def cancelled(input_ids: Any, logits: Any) -> bool:
            return generation.cancelled.is_set()

        if not wait_for_model(self._lock, generation.cancelled):
            return
        chunks: Any = None
        try:
            self._apply(job.adapter)
            chunks = self.llm.create_completion(
                prompt=list(job.prompt_ids),
                max_tokens=job.max_tokens,
                temperature=job.temperature,
                top_p=job.top_p,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                stop=job.stop or None,
                seed=None if job.seed is None else job.seed % LLAMA_SEED_RANGE,
                stream=True,
                logits_processor=LogitsProcessorList([count]),
                stopping_criteria=StoppingCriteriaList([cancelled]),
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["text"]:
                    yield choice["text"]
                if choice.get("finish_reason"):
                    generation.finish_reason = choice["finish_reason"]
        finally:
            if chunks is not None:  # end llama-cpp-python's generator while the lock is still held
                chunks.close()
            self._lock.release()
        generation.completion_tokens = steps
