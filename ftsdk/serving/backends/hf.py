"""transformers + peft: the base loaded once, PEFT adapters loaded beside it and chosen per request.

One PeftModel holds every adapter (``load_adapter``); the base model answers with adapters disabled.
Whole (non-streamed) requests are batched dynamically (:mod:`ftsdk.serving.batching`): the waiting
requests run as one left-padded ``generate`` (:mod:`ftsdk.serving.backends.hf_batch`), rows for
different adapters together through PEFT's ``adapter_names``. A streamed request runs alone, in its own
thread, streaming text through a ``TextIteratorStreamer`` (``set_adapter`` picks its adapter). The model
runs one ``generate`` at a time, behind a lock; a request waiting for it gives up when it is cancelled.

Stop sequences are matched on the decoded tail of the generated tokens at each step, not with
transformers' ``stop_strings``: its ``StopStringCriteria`` first embeds the whole vocabulary against the
stop strings (about 1 s for SmolLM2's 49k tokens, 24 s for a 16,000-character stop), per new set of stops.
"""

from __future__ import annotations

import contextlib
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
from ftsdk.serving.backends.hf_batch import BASE_ROW, generate_rows, sampling_options
from ftsdk.serving.batching import Batcher, Pending
from ftsdk.serving.config import ServeConfig
from ftsdk.serving.stops import StopFilter


class TransformersBackend(Backend):
    name: ClassVar[str] = "transformers"
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft")
    install_hint: ClassVar[str] = "pip install ftsdk (torch, transformers and peft are core dependencies)"

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(config)
        import torch

        from ftsdk.models.device import choose_placement
        from ftsdk.models.loading import load_model, load_tokenizer, resolve
        from ftsdk.models.spec import ModelSpec

        if config.threads:
            torch.set_num_threads(config.threads)
        spec = ModelSpec(name=config.base, device=config.device, dtype=config.dtype)
        resolved = resolve(spec)
        self.tokenizer = load_tokenizer(resolved, spec)
        self.model: Any = load_model(resolved, spec, choose_placement(config.device, config.dtype)).eval()
        self.peft: Any = None  # the PeftModel around self.model while at least one adapter is loaded
        self._lock = threading.Lock()
        model_context = getattr(self.model.config, "max_position_embeddings", None) or config.max_context or 2048
        self._context = min(config.max_context or model_context, model_context)
        eos = self.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])
        self._batcher = Batcher(self._run_batch, config.max_batch_size, config.batch_wait_ms / 1000)

    @classmethod
    def check_base(cls, base: str) -> None:
        from ftsdk.models.loading import ALIASES

        path = Path(base).expanduser()
        if base not in ALIASES and not path.exists() and "/" not in base:
            raise ConfigError(f"base model '{base}' is neither a known alias nor a path",
                              hint=f"aliases: {', '.join(ALIASES)}; or a model folder, a .gguf file, a hub id")

    @classmethod
    def check_adapter(cls, path: str) -> Path:
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"adapter '{path}' is not a PEFT adapter folder (no adapter_config.json in it)",
                              hint="point at a training run's output folder or any folder written by save_pretrained")
        return folder

    @property
    def context_length(self) -> int:
        return self._context

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        from jinja2 import TemplateError

        if not self.tokenizer.chat_template:
            raise DataError("the base model's tokenizer has no chat template", hint="use /v1/completions instead")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:
            raise DataError(f"the chat template refused these messages: {exc}") from None
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftConfig, PeftModel

        with self._lock:
            try:
                if self.peft is None:
                    config = PeftConfig.from_pretrained(str(path))
                    config.inference_mode = True
                    self.peft = PeftModel(self.model, config, adapter_name=name)
                self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
            except Exception as exc:  # noqa: BLE001 - peft raises many kinds; the server must keep serving
                self._forget(name)
                raise ModelLoadError(f"could not load adapter '{name}' from {path}: {type(exc).__name__}: {exc}",
                                     hint="the adapter must have been trained on this base model") from None
            self.peft.eval()

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            self._forget(name)

    def _forget(self, name: str) -> None:
        """Delete adapter ``name``; with the last one gone, take the PEFT layers out of the base model again."""
        if self.peft is None or name not in self.peft.peft_config:
            return
        if len(self.peft.peft_config) > 1:
            self.peft.delete_adapter(name)
            return
        from peft.tuners.tuners_utils import BaseTuner

        tuner = self.peft.base_model
        self.model = tuner.unload() if isinstance(tuner, BaseTuner) else self.peft.get_base_model()
        self.peft = None

    def _select(self, adapter: str | None) -> tuple[Any, contextlib.AbstractContextManager[Any]]:
        """The model to run and the context to run it in; call with the lock held."""
        if adapter is None:
            return (self.model, contextlib.nullcontext()) if self.peft is None else (self.peft, self.peft.disable_adapter())
        if self.peft is None or adapter not in self.peft.peft_config:
            raise UnknownAdapterError(adapter)
        self.peft.set_adapter(adapter)
        return self.peft, contextlib.nullcontext()

    def start(self, job: GenerationJob) -> Generation:
        if not job.stream:
            return self._batcher.submit(job)
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generation = Generation(pieces=iter(()))
        outcome: dict[str, Any] = {}
        worker = threading.Thread(target=self._generate, args=(job, streamer, generation, outcome), daemon=True)
        worker.start()
        generation.pieces = self._pieces(job, streamer, generation, outcome, worker)
        return generation

    def _generate(self, job: GenerationJob, streamer: Any, generation: Generation, outcome: dict[str, Any]) -> None:
        import torch

        try:
            if not wait_for_model(self._lock, generation.cancelled):
                outcome["ids"] = []
                streamer.end()
                return
            try:
                model, context = self._select(job.adapter)
                ids = torch.tensor([job.prompt_ids], dtype=torch.long, device=model.device)
                if job.seed is not None:
                    torch.manual_seed(job.seed)
                with context, torch.inference_mode():
                    output = model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=job.max_tokens,
                        streamer=streamer,
                        stopping_criteria=self._criteria(job, generation),
                        pad_token_id=self.tokenizer.pad_token_id,
                        **sampling_options(job),
                    )
            finally:
                self._lock.release()
            outcome["ids"] = output[0, ids.shape[1] :].tolist()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it in the request
            outcome["error"] = exc
            streamer.end()

    def _run_batch(self, group: list[Pending]) -> None:
        """Generate ``group`` (same sampling options) as one batch; fill in each request's text and counts."""
        with self._lock:
            loaded = (None, *self.peft.peft_config) if self.peft is not None else (None,)
            known = [p for p in group if p.job.adapter in loaded]
            for pending in group:
                if pending.job.adapter not in loaded:
                    pending.error = UnknownAdapterError(pending.job.adapter)
            if not known:
                return
            names = None
            if len({p.job.adapter for p in known}) == 1:  # one adapter: no per-row routing in every LoRA layer
                model, context = self._select(known[0].job.adapter)
            else:
                model, context = self.peft, contextlib.nullcontext()
                names = [p.job.adapter or BASE_ROW for p in known]
            with context:
                rows = generate_rows(model, self.tokenizer, [p.job for p in known], [p.generation for p in known],
                                     names, self._eos)
        for pending, row in zip(known, rows, strict=True):
            stops = StopFilter(pending.job.stop)
            pending.text = stops.feed(self.tokenizer.decode(row.ids, skip_special_tokens=True)) + stops.flush()
            generation = pending.generation
            generation.completion_tokens = len(row.ids)
            ended = row.ended or stops.stopped or len(row.ids) < pending.job.max_tokens
            generation.finish_reason = "stop" if ended else "length"

    def _criteria(self, job: GenerationJob, generation: Generation) -> Any:
        """Stop when the generation is cancelled, or when the text generated so far contains a stop sequence."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tokenizer, stops, start = self.tokenizer, job.stop, len(job.prompt_ids)
        # a token decodes to at least one byte and a character is at most four: this many tokens hold any stop
        window = 4 * max((len(s) for s in stops), default=0) + 4

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
                return generation.cancelled.is_set()

        class _StopText(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
                tail = input_ids[0, max(start, input_ids.shape[1] - window) :]
                # U+FFFD at the ends is a character cut between tokens (the next token may complete it)
                text = tokenizer.decode(tail, skip_special_tokens=True).strip("\ufffd")
                return any(stop in text for stop in stops)

        return StoppingCriteriaList([_Cancelled(), _StopText()] if stops else [_Cancelled()])

    def _pieces(self, job: GenerationJob, streamer: Any, generation: Generation, outcome: dict[str, Any],
                worker: threading.Thread) -> Iterator[str]:
        stops = StopFilter(job.stop)
        try:
            for piece in streamer:
                text = stops.feed(piece)
                if text:
                    yield text
                if stops.stopped:
                    generation.cancelled.set()
            worker.join()
            if "error" in outcome:
                raise outcome["error"]
            rest = stops.flush()
            if rest:
                yield rest
            new_ids: list[int] = outcome["ids"]
            generation.completion_tokens = len(new_ids)
            ended = stops.stopped or bool(new_ids and new_ids[-1] in self._eos) or len(new_ids) < job.max_tokens
            generation.finish_reason = "stop" if ended else "length"
        finally:
            generation.cancelled.set()
