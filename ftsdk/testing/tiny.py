"""Tiny random-init models (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3) with a BPE tokenizer trained
on the fly, and a small learnable task."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
THINGS = ["apple", "sky", "grass", "banana", "coal", "snow", "carrot", "plum", "lime", "cherry", "ocean", "lemon"]
WORDS = ["the", "a", "what", "is", "color", "of", "tell", "me", "please", "answer", "route", "this", "ticket", "team", "billing", "shipping", "account", "returns", "technical", "sales", "my", "order", "where", "refund", "card", "charged", "twice", "password", "reset", "login", "broken", "screen", "arrived", "late", "package", "tracking", "number", "invoice", "discount", "laptop", "phone", "headphones", "speaker", "cable", "battery", "you", "are", "assistant", "helpful", "system", "user", "reply", "with", "one", "word", "only", "and", "to", "for", "in", "on", "at", "it"]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model. Keep rows multiples of 32 (legacy quants) or 256 (k-quants) as needed."""

    vocab_size: int = 384
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = True
    seed: int = 0


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(2000)]
    lines += [f"the {thing} is {color}" for thing in THINGS for color in COLORS]
    return lines


#: special tokens of the real family that llama.cpp looks up by text (a model named phi-3/phi3 needs </s>, <unk>, <s>)
EXTRA_SPECIAL_TOKENS = {"phi3": ("<unk>", "<s>", "</s>", "<|end|>", "<|user|>", "<|assistant|>")}
#: families whose special tokens swallow the whitespace after them (Phi-3's tokenizer.json; llama.cpp does the
#: same for every special token of a model named phi-3/phi3)
RSTRIP_SPECIAL = ("phi3",)


def build_tokenizer(spec: TinySpec = TinySpec(), extra_special: tuple[str, ...] = (), rstrip: bool = False) -> Any:
    """A byte-level BPE tokenizer with ChatML special tokens (and ``extra_special``, all stripping the whitespace
    after them with ``rstrip``) and chat template (eos = pad = <|im_end|>)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[AddedToken(t, special=True, normalized=False, rstrip=rstrip)
                        for t in SPECIAL_TOKENS + list(extra_special)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(spec.seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


#: the architectures :func:`build_tiny_model` builds (its ``architecture`` argument)
TINY_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")


def _common(spec: TinySpec, tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def tiny_config(architecture: str, spec: TinySpec, tokenizer: Any) -> Any:
    """The transformers config of a tiny ``architecture`` model (one of :data:`TINY_ARCHITECTURES`).

    Each family's own traits are kept: Qwen2's q/k/v biases, Qwen3's q/k norms, Gemma's soft-capping, sliding
    window (16 tokens, so short texts cross it) and pre-attention scale (head_dim, as llama.cpp assumes),
    Phi-3's fused qkv/gate_up projections and untied output. Sliding windows that llama.cpp does not apply to
    those graphs (Mistral, Qwen2, Phi-3) are off.
    """
    import transformers

    common = _common(spec, tokenizer)
    head = spec.hidden_size // spec.num_heads
    if architecture == "llama":
        return transformers.LlamaConfig(**common)
    if architecture == "mistral":
        return transformers.MistralConfig(**common, head_dim=head, sliding_window=None)
    if architecture == "qwen2":
        return transformers.Qwen2Config(**common, use_sliding_window=False)
    if architecture == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=head, use_sliding_window=False)
    if architecture in ("gemma2", "gemma3"):
        gemma = {**common, "head_dim": head, "query_pre_attn_scalar": head, "sliding_window": 16}
        if architecture == "gemma2":
            return transformers.Gemma2Config(**gemma)
        return transformers.Gemma3TextConfig(**gemma)
    if architecture == "phi3":
        return transformers.Phi3Config(**{**common, "tie_word_embeddings": False}, sliding_window=None,
                                       original_max_position_embeddings=spec.max_position_embeddings)
    raise ValueError(f"no tiny {architecture!r} model: pick one of {', '.join(TINY_ARCHITECTURES)}")


def build_tiny_model(folder: str | Path, spec: TinySpec = TinySpec(), architecture: str = "llama") -> Path:
    """Write a random-init causal LM of ``architecture`` (default: Llama) and its tokenizer to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(spec, EXTRA_SPECIAL_TOKENS.get(architecture, ()), architecture in RSTRIP_SPECIAL)
    config = tiny_config(architecture, spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def task_rows(count: int, seed: int = 0, system: bool = True) -> list[dict[str, Any]]:
    """Chat rows of a tiny learnable task: name the color of a thing (a fixed mapping)."""
    rng = random.Random(seed)
    mapping = {thing: COLORS[i % len(COLORS)] for i, thing in enumerate(THINGS)}
    rows = []
    for _ in range(count):
        thing = rng.choice(THINGS)
        messages = [{"role": "system", "content": "reply with one word only"}] if system else []
        messages += [
            {"role": "user", "content": f"what is the color of the {thing}"},
            {"role": "assistant", "content": mapping[thing]},
        ]
        rows.append({"messages": messages})
    return rows


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write rows as JSON Lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _color_questions(count: int, seed: int) -> list[tuple[str, str, str]]:
    """``(question, right color, a wrong color)`` triples of the color task."""
    rng = random.Random(seed)
    mapping = {thing: COLORS[i % len(COLORS)] for i, thing in enumerate(THINGS)}
    triples = []
    for _ in range(count):
        thing = rng.choice(THINGS)
        wrong = rng.choice([c for c in COLORS if c != mapping[thing]])
        triples.append((f"what is the color of the {thing}", mapping[thing], wrong))
    return triples


def preference_rows(count: int, seed: int = 0, chat: bool = False) -> list[dict[str, Any]]:
    """Preference pairs of the color task: the right color is chosen, a wrong one rejected."""
    rows = []
    for question, right, wrong in _color_questions(count, seed):
        if chat:
            rows.append({
                "prompt": [{"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": right}],
                "rejected": [{"role": "assistant", "content": wrong}],
            })
        else:
            rows.append({"prompt": question, "chosen": right, "rejected": wrong})
    return rows


def unpaired_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """KTO rows of the color task: right colors labelled true, wrong ones false, alternating."""
    return [
        {"prompt": question, "completion": right if i % 2 == 0 else wrong, "label": i % 2 == 0}
        for i, (question, right, wrong) in enumerate(_color_questions(count, seed))
    ]


def prompt_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Prompt-only rows of the color task, with the right color as an ``answer`` column for reward functions."""
    return [{"prompt": question, "answer": right} for question, right, _ in _color_questions(count, seed)]
