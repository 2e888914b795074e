"""Runtimes that answer prompts for evaluation: transformers (with PEFT adapters) and llama.cpp (GGUF)."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ftsdk.data.formats import Conversation
from ftsdk.evaluation.spec import GenerationOptions
from ftsdk.models.perplexity import ConversationPerplexity


@dataclass(frozen=True)
class Generation:
    """One reply, its length in tokens and the wall time spent on it (a batch's time shared by its prompts)."""

    text: str
    tokens: int
    seconds: float


class Backend(ABC):
    """What the evaluation asks of a loaded model."""

    #: human-readable runtime name recorded in results
    runtime: str

    @abstractmethod
    def generate(self, conversations: list[Conversation], options: GenerationOptions) -> list[Generation]:
        """The reply to each conversation."""

    @abstractmethod
    def label_scores(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        """log P(reply = label | conversation) for every conversation and label."""

    def answer(self, conversations: list[Conversation], options: GenerationOptions,
               labels: list[str] | None = None) -> tuple[list[Generation], list[list[float]] | None]:
        """The reply to each conversation and, given ``labels``, their :meth:`label_scores`."""
        scores = self.label_scores(conversations, labels) if labels else None
        return self.generate(conversations, options), scores

    @abstractmethod
    def perplexity(self, conversations: list[Conversation]) -> ConversationPerplexity:
        """Perplexity of each conversation's last reply alone and of the whole conversations, on the token ids
        of :func:`reply_tokens`."""


def reply_tokens(template: Any, encode: Callable[[str], list[int]], conversation: Conversation,
                 max_length: int) -> tuple[list[int], list[bool]]:
    """A conversation's token ids and which of them are its last reply, split as training's assistant mask splits.

    ``template`` renders like ``apply_chat_template``; ``encode`` tokenizes one piece of text without special tokens.
    The reply runs from the generation prompt through the end-of-turn marker. The ids are cut from the left to
    ``max_length``, so a long prompt never pushes the reply out.
    """
    from ftsdk.data.tokenize import segments

    ids: list[int] = []
    mask: list[bool] = []
    for text, in_reply in segments(template, conversation, turns="last"):
        piece = encode(text)
        ids += piece
        mask += [in_reply] * len(piece)
    return ids[-max_length:], mask[-max_length:]


class TransformersBackend(Backend):
    """A transformers model (a PEFT model too; ``adapter_off`` answers as its base with the adapter disabled)."""

    runtime = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, adapter_off: bool = False, max_length: int = 1024) -> None:
        self.model, self.tokenizer, self.adapter_off, self.max_length = model, tokenizer, adapter_off, max_length

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        if self.adapter_off:
            with self.model.disable_adapter():
                yield
        else:
            yield

    def answer(self, conversations: list[Conversation], options: GenerationOptions,
               labels: list[str] | None = None) -> tuple[list[Generation], list[list[float]] | None]:
        """Greedy replies and label scores from one prompt pass (``ftsdk.evaluation.answering``); sampled
        replies are generated apart. Rows whose scoring prompt differs from the generation prompt (cut to
        ``max_length``) are scored apart."""
        from ftsdk.evaluation.answering import answer, generation_ids
        from ftsdk.evaluation.labels import prompts_and_replies, reply_table

        if options.temperature > 0:
            return super().answer(conversations, options, labels)
        ids = generation_ids(self.tokenizer, conversations)
        table, apart = None, []
        if labels:
            prompts, replies = prompts_and_replies(self.tokenizer, conversations, labels, self.max_length)
            table = reply_table(self.tokenizer, labels, replies)
            apart = [i for i, (prompt, own) in enumerate(zip(prompts, ids)) if prompt != own]
        model = self.model
        with self._active():
            done = answer(model, self.tokenizer, ids, max_new_tokens=options.max_new_tokens,
                          batch_size=options.batch_size, labels=table)
        scores = done.scores
        if apart and scores is not None and labels:
            for row, score in zip(apart, self.label_scores([conversations[i] for i in apart], labels)):
                scores[row] = score
        texts = [t.strip() for t in self.tokenizer.batch_decode(done.tokens, skip_special_tokens=True)]
        return [Generation(t, len(self.tokenizer(t, add_special_tokens=False)["input_ids"]), s)
                for t, s in zip(texts, done.seconds)], scores

    def generate(self, conversations: list[Conversation], options: GenerationOptions) -> list[Generation]:
        from ftsdk.models.generation import generate_replies

        if options.temperature == 0:
            return self.answer(conversations, options)[0]
        out: list[Generation] = []
        with self._active():
            for start in range(0, len(conversations), options.batch_size):
                batch = conversations[start : start + options.batch_size]
                began = time.perf_counter()
                replies = generate_replies(self.model, self.tokenizer, batch, max_new_tokens=options.max_new_tokens,
                                           temperature=options.temperature, batch_size=len(batch))
                share = (time.perf_counter() - began) / len(batch)
                out += [Generation(r, len(self.tokenizer(r, add_special_tokens=False)["input_ids"]), share)
                        for r in replies]
        return out

    def label_scores(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        from ftsdk.evaluation.labels import label_log_likelihoods

        model = self.model
        with self._active():
            return label_log_likelihoods(model, self.tokenizer, conversations, labels, max_length=self.max_length)

    def perplexity(self, conversations: list[Conversation]) -> ConversationPerplexity:
        from ftsdk.models.perplexity import split_perplexity, token_nlls

        def encode(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        ids, masks = zip(*(reply_tokens(self.tokenizer, encode, c, self.max_length) for c in conversations))
        model = self.model
        with self._active():
            return split_perplexity(token_nlls(model, list(ids)), list(masks))


def kv_cache_type(llm: Any) -> str:
    """The element type of a ``llama_cpp.Llama``'s KV cache, as llama.cpp names it: ``f16`` (llama-cpp-python's
    default), ``f32``, ``q8_0``...; ``K q8_0, V f16`` when keys and values differ."""
    import llama_cpp

    names = {value: key.removeprefix("GGML_TYPE_").lower() for key, value in vars(llama_cpp).items()
             if key.startswith("GGML_TYPE_") and isinstance(value, int)}
    keys, values = (names.get(t, str(t)) for t in (llm.context_params.type_k, llm.context_params.type_v))
    return keys if keys == values else f"K {keys}, V {values}"


class _GgufTemplate:
    """A GGUF's stored chat template behind ``apply_chat_template``, so :func:`reply_tokens` splits it as it
    splits a transformers tokenizer's."""

    def __init__(self, prompt: Any, whole: Any) -> None:
        self.prompt, self.whole = prompt, whole

    def apply_chat_template(self, messages: Conversation, *, tools: list[dict[str, Any]] | None = None,
                            tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        formatter = self.prompt if add_generation_prompt else self.whole
        return formatter(messages=messages, tools=tools).prompt


class GgufBackend(Backend):
    """A GGUF model run by llama.cpp (``ftsdk.gguf.runtime``); prompts use the chat template stored in the file.

    The runtime recorded in results names the KV cache type: llama-cpp-python's default f16 cache moves an f32
    GGUF's log-probabilities ~1e-2 from transformers (an f32 cache: ~3e-5; docs/evaluation.md).
    """

    runtime = "llama.cpp"

    def __init__(self, llm: Any) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = llm
        self.runtime = f"llama.cpp ({kv_cache_type(llm)} KV cache)"
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            from ftsdk.plugin.errors import ModelLoadError

            raise ModelLoadError("this GGUF file stores no chat template", hint="convert it from a chat model folder")
        def special(token: int) -> str:
            return llm.detokenize([token], special=True).decode("utf-8", "replace")

        self._eos = special(llm.token_eos())
        self._prompt = Jinja2ChatFormatter(template, self._eos, special(llm.token_bos()))
        self._whole = Jinja2ChatFormatter(template, self._eos, special(llm.token_bos()), add_generation_prompt=False)
        self._template = _GgufTemplate(self._prompt, self._whole)

    def generate(self, conversations: list[Conversation], options: GenerationOptions) -> list[Generation]:
        out: list[Generation] = []
        for conversation in conversations:
            began = time.perf_counter()
            response = self.llm.create_chat_completion(
                messages=conversation, max_tokens=options.max_new_tokens, temperature=options.temperature,
                top_k=1 if options.temperature == 0 else 40, seed=0,
            )
            text = (response["choices"][0]["message"]["content"] or "").strip()
            out.append(Generation(text, response["usage"]["completion_tokens"], time.perf_counter() - began))
        return out

    def _ids(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _nll(self, ids: list[int]) -> float:
        from ftsdk.gguf.runtime import gguf_sequence_nll

        return gguf_sequence_nll(self.llm, [ids])[0]

    def label_scores(self, conversations: list[Conversation], labels: list[str]) -> list[list[float]]:
        """-(NLL of prompt + label + end of turn) + NLL of the prompt, one llama.cpp pass per sequence."""
        rows = []
        for conversation in conversations:
            prompt = self._ids(self._prompt(messages=conversation).prompt)
            base = self._nll(prompt)
            rows.append([base - self._nll(prompt + self._ids(label + self._eos)) for label in labels])
        return rows

    def perplexity(self, conversations: list[Conversation]) -> ConversationPerplexity:
        from ftsdk.gguf.runtime import sequence_log_probs
        from ftsdk.models.perplexity import split_perplexity

        ids, masks = zip(*(reply_tokens(self._template, self._ids, c, self.llm.n_ctx()) for c in conversations))
        nlls = []
        for tokens in ids:
            log_probs = sequence_log_probs(self.llm, tokens)
            nlls.append([-float(log_probs[i, tokens[i + 1]]) for i in range(len(tokens) - 1)])
        return split_perplexity(nlls, list(masks))
