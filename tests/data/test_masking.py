"""Assistant-only loss: exactly the assistant tokens (and their end-of-turn token) are trained, for any template."""

from __future__ import annotations

import pytest

from ftsdk.data.tokenize import IGNORE_INDEX, segments, tokenize_all, tokenize_conversation
from ftsdk.plugin.errors import DataError
from ftsdk.testing import build_tokenizer
from ftsdk.testing.tiny import CHATML_TEMPLATE

LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Like SmolLM2's: a default system prompt is injected when the conversation has none.
DEFAULT_SYSTEM = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Drops earlier assistant turns once a later one exists (as some reasoning templates do).
REWRITING = (
    "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "reply with one word only"},
    {"role": "user", "content": "what is the color of the sky"},
    {"role": "assistant", "content": "blue"},
    {"role": "user", "content": "and the grass"},
    {"role": "assistant", "content": "green please"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def trained_text(tokenizer, example) -> list[str]:
    """Decode each run of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.parametrize(
    ("template", "end_of_turn"),
    [(CHATML_TEMPLATE, "<|im_end|>"), (LLAMA3_STYLE, "<|eot_id|>"), (DEFAULT_SYSTEM, "<|im_end|>")],
    ids=["chatml", "llama3-style", "default-system-prompt"],
)
def test_only_assistant_turns_and_end_of_turn_are_trained(tokenizer, template, end_of_turn):
    tokenizer = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>",
                                    bos_token="<|im_start|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>",
                                                                "<|end_header_id|>"]})
    tokenizer.chat_template = template
    example = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert trained_text(tokenizer, example) == [f"blue{end_of_turn}", f"green please{end_of_turn}"]
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert tokenizer.decode(example.input_ids) == full


def test_prompt_tokens_match_what_inference_sees(tokenizer):
    example = tokenize_conversation(tokenizer, CONVERSATION[:3], max_length=512)
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in example.labels[: len(prompt_ids)])


def test_full_loss_trains_every_token(tokenizer):
    example = tokenize_conversation(tokenizer, CONVERSATION, max_length=512, assistant_only=False)
    assert example.labels == example.input_ids


def test_truncation_drops_examples_without_trained_tokens(tokenizer):
    kept, dropped = tokenize_all(tokenizer, [CONVERSATION, CONVERSATION], max_length=8, assistant_only=True)
    assert (kept, dropped) == ([], 2)
    kept, dropped = tokenize_all(tokenizer, [CONVERSATION], max_length=512, assistant_only=True)
    assert len(kept) == 1 and dropped == 0 and len(kept[0].input_ids) <= 512


def test_template_that_rewrites_history_is_refused_clearly(tokenizer):
    tokenizer.chat_template = REWRITING
    try:
        with pytest.raises(DataError, match="renders earlier turns differently"):
            segments(tokenizer, CONVERSATION)
    finally:
        tokenizer.chat_template = CHATML_TEMPLATE
