"""Tokenize examples with their loss masks: chat (with or without tools) on assistant turns, raw text on all.

Each assistant turn's span is found by rendering the conversation's prefixes turn by turn:
``render(messages[:i], add_generation_prompt=True)`` ends where assistant turn ``i`` starts, and
``render(messages[:i + 1])`` ends just after its end-of-turn marker. The text is tokenized one
span at a time, so the prompt tokens are exactly those the model sees at inference time.
No ``{% generation %}`` markers are needed in the template. Tool results (``tool`` turns) are
prompt, never trained; an assistant turn's tool calls are part of its trained span.

Raw text (``{"text": ...}``) is tokenized whole, ends with the end-of-sequence token, and is packed
with the other texts into ``max_length`` blocks (:func:`pack`): no token is cut off and every one is learned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ftsdk.data.formats import Conversation, Example
from ftsdk.plugin.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
#: which assistant turns carry the loss: every one, or only the last of each conversation
TrainedTurns = Literal["all", "last"]


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken


def _render(tokenizer: PreTrainedTokenizerBase, messages: Conversation, generation_prompt: bool,
            tools: list[dict[str, Any]] | None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def segments(tokenizer: PreTrainedTokenizerBase, messages: Conversation, tools: list[dict[str, Any]] | None = None,
             turns: TrainedTurns = "all") -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, trained)`` pieces."""
    full = _render(tokenizer, messages, False, tools)
    assistant = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    pieces: list[tuple[str, bool]] = []
    done = 0
    for i in assistant if turns == "all" else assistant[-1:]:
        before = _render(tokenizer, messages[:i], True, tools) if i else ""
        through = _render(tokenizer, messages[: i + 1], False, tools).rstrip()
        if not (full.startswith(before) and full.startswith(through) and done <= len(before) <= len(through)):
            raise DataError(
                "the chat template renders earlier turns differently once later turns are added, "
                "so assistant turns cannot be located",
                hint="set objective_config assistant_only_loss: false, or use a template that only appends",
            )
        span = full[len(before) : len(through)]
        _check_calls_rendered(messages[i], span)
        pieces += [(full[done : len(before)], False), (span, True)]
        done = len(through)
    pieces.append((full[done:], False))
    return [(text, trained) for text, trained in pieces if text]


def _check_calls_rendered(message: dict[str, Any], span: str) -> None:
    """Refuse a template that drops an assistant turn's tool calls (it would train on an empty turn)."""
    for call in message.get("tool_calls") or ():
        if call["function"]["name"] not in span:
            raise DataError(
                f"the chat template does not render the tool call '{call['function']['name']}' of an assistant "
                "turn, so the model would learn to answer with nothing",
                hint="use a model (or chat_template) that supports tool calling, e.g. Qwen2.5, Llama 3.1+, Mistral",
            )


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Conversation, max_length: int, assistant_only: bool = True,
    *, tools: list[dict[str, Any]] | None = None, turns: TrainedTurns = "all",
) -> TokenizedExample:
    """Token ids and labels, truncated to ``max_length``; only assistant tokens are trained if asked."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(tokenizer, messages, tools, turns):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trained or not assistant_only else [IGNORE_INDEX] * len(ids)
    return TokenizedExample(input_ids[:max_length], labels[:max_length])


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """A document's tokens, closed by the end-of-sequence token (when the tokenizer has one)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, max_length: int, assistant_only: bool = True,
    turns: TrainedTurns = "all",
) -> TokenizedExample:
    """One SFT example of any shape (conversation, conversation with tools, raw text), truncated."""
    if isinstance(example, dict) and "text" in example:
        ids = text_ids(tokenizer, example["text"])[:max_length]
        return TokenizedExample(ids, list(ids))
    if isinstance(example, dict):
        return tokenize_conversation(tokenizer, example["messages"], max_length, assistant_only,
                                     tools=example.get("tools"), turns=turns)
    return tokenize_conversation(tokenizer, example, max_length, assistant_only, turns=turns)


def pack(documents: Iterable[list[int]], max_length: int) -> Iterator[TokenizedExample]:
    """Concatenate documents and cut them into ``max_length`` blocks (the last may be shorter), all trained."""
    buffer: list[int] = []
    for ids in documents:
        buffer += ids
        while len(buffer) >= max_length:
            block, buffer = buffer[:max_length], buffer[max_length:]
            yield TokenizedExample(block, list(block))
    if buffer:
        yield TokenizedExample(buffer, list(buffer))


def check_template(tokenizer: PreTrainedTokenizerBase, examples: Iterable[Example]) -> None:
    """Refuse conversations for a tokenizer without a chat template (raw text needs none)."""
    if not tokenizer.chat_template and any(not (isinstance(e, dict) and "text" in e) for e in examples):
        raise DataError(
            "the tokenizer has no chat template (a base model), so conversations cannot be rendered",
            hint="choose one: chat_template: chatml (or qwen, llama3, mistral, gemma, phi3, or a Jinja file) in the "
            "recipe, Tuner(chat_template=...); or train on raw text rows {\"text\": ...}",
        )


def tokenize_all(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int, assistant_only: bool,
    turns: TrainedTurns = "all",
) -> tuple[list[TokenizedExample], int]:
    """Tokenize every example; drop those left with no trained token. Returns (kept, dropped).

    Raw text is packed into ``max_length`` blocks (so it is never dropped or cut).
    """
    check_template(tokenizer, examples[:1])
    if examples and isinstance(examples[0], dict) and "text" in examples[0]:
        return list(pack((text_ids(tokenizer, e["text"]) for e in examples), max_length)), 0
    kept = []
    for example in examples:
        tokenized = tokenize_example(tokenizer, example, max_length, assistant_only, turns)
        if any(label != IGNORE_INDEX for label in tokenized.labels):
            kept.append(tokenized)
    return kept, len(examples) - len(kept)
