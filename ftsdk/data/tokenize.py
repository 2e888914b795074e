"""Tokenize conversations with a loss mask on assistant turns, for any chat template.

Each assistant turn's span is found by rendering the conversation's prefixes turn by turn:
``render(messages[:i], add_generation_prompt=True)`` ends where assistant turn ``i`` starts, and
``render(messages[:i + 1])`` ends just after its end-of-turn marker. The text is tokenized one
span at a time, so the prompt tokens are exactly those the model sees at inference time.
No ``{% generation %}`` markers are needed in the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftsdk.data.formats import Conversation
from ftsdk.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken


def _render(tokenizer: PreTrainedTokenizerBase, messages: Conversation, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def segments(tokenizer: PreTrainedTokenizerBase, messages: Conversation) -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, trained)`` pieces."""
    full = _render(tokenizer, messages, False)
    pieces: list[tuple[str, bool]] = []
    done = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else ""
        through = _render(tokenizer, messages[: i + 1], False).rstrip()
        if not (full.startswith(before) and full.startswith(through) and done <= len(before) <= len(through)):
            raise DataError(
                "the chat template renders earlier turns differently once later turns are added, "
                "so assistant turns cannot be located",
                hint="set objective_config assistant_only_loss: false, or use a template that only appends",
            )
        pieces += [(full[done : len(before)], False), (full[len(before) : len(through)], True)]
        done = len(through)
    pieces.append((full[done:], False))
    return [(text, trained) for text, trained in pieces if text]


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Conversation, max_length: int, assistant_only: bool = True
) -> TokenizedExample:
    """Token ids and labels, truncated to ``max_length``; only assistant tokens are trained if asked."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trained or not assistant_only else [IGNORE_INDEX] * len(ids)
    return TokenizedExample(input_ids[:max_length], labels[:max_length])


def tokenize_all(
    tokenizer: PreTrainedTokenizerBase, conversations: list[Conversation], max_length: int, assistant_only: bool
) -> tuple[list[TokenizedExample], int]:
    """Tokenize every conversation; drop those left with no trained token. Returns (kept, dropped)."""
    if not tokenizer.chat_template:
        raise DataError(
            "the tokenizer has no chat template, so conversations cannot be rendered",
            hint="use an instruct model, or set tokenizer.chat_template before training",
        )
    kept = []
    for messages in conversations:
        example = tokenize_conversation(tokenizer, messages, max_length, assistant_only)
        if any(label != IGNORE_INDEX for label in example.labels):
            kept.append(example)
    return kept, len(conversations) - len(kept)
