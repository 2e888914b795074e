"""A transformers byte-level BPE tokenizer written into GGUF metadata, as llama.cpp's converter writes it.

llama.cpp re-implements each BPE pre-tokenizer by name (``tokenizer.ggml.pre``). Its converter picks the name
by hashing the token ids of a test string, so it rejects every tokenizer it has not seen (a freshly trained
one included). Here the name comes from the pre-tokenizer's *structure* in ``tokenizer.json``: the llama.cpp
pre-tokenizers listed in :data:`PRE_TOKENIZERS` split text exactly like those structures (tests check the
token ids of both runtimes agree). Anything else is refused, naming what was found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ConfigError

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}
#: Qwen2/2.5/3's split (every digit alone); Llama 3's differs in ``\p{N}{1,3}`` (digits in threes)
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_REGEX = _QWEN2_REGEX.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def _split_then_bytes(regex: str) -> dict[str, Any]:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}



#: llama.cpp pre-tokenizer name -> the ``tokenizer.json`` pre_tokenizer it matches (keys compared; others ignored)
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    # GPT-2's regex, then bytes to unicode (llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_GPT2)
    "gpt-2": _BYTE_LEVEL,
    # every digit alone, then GPT-2's regex (LLAMA_VOCAB_PRE_TYPE_SMOLLM: SmolLM/SmolLM2, StarCoder's split)
    "smollm": {"type": "Sequence", "pretokenizers": [_DIGITS, _BYTE_LEVEL]},
    # Qwen2's regex, bytes to unicode (LLAMA_VOCAB_PRE_TYPE_QWEN2: Qwen2, Qwen2.5, Qwen3)
    "qwen2": _split_then_bytes(_QWEN2_REGEX),
    # Llama 3's regex (LLAMA_VOCAB_PRE_TYPE_LLAMA3: Llama 3.x)
    "llama-bpe": _split_then_bytes(_LLAMA3_REGEX),
}
#: normalizers accepted: llama.cpp normalizes nothing, and NFC leaves text already in NFC (nearly all text) as it is
NORMALIZERS = (None, {"type": "NFC"})


def _matches(found: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(found, dict) and all(_matches(found.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(found, list) and len(found) == len(pattern) and all(map(_matches, found, pattern))
    return found == pattern


def read_tokenizer_json(folder: Path) -> dict[str, Any]:
    """The folder's ``tokenizer.json``; ConfigError when it is missing or not byte-level BPE."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no tokenizer.json: the GGUF converter needs a fast (byte-level BPE) tokenizer",
                          hint="save the tokenizer with transformers (tokenizer.save_pretrained) into the model folder")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("model", {}).get("type") != "BPE" or data.get("normalizer") not in NORMALIZERS:
        raise ConfigError(f"{path}: only byte-level BPE tokenizers without a normalizer (or NFC) convert to GGUF here "
                          f"(found model {data.get('model', {}).get('type')!r}, normalizer {data.get('normalizer')!r})",
                          hint="convert this model with llama.cpp's own convert_hf_to_gguf.py")
    return data


def tokenizer_rows(folder: Path) -> int:
    """Tokens of ``tokenizer.json`` counted as llama.cpp's converter counts them for Gemma 3 (model vocabulary
    plus added tokens): the embedding rows it keeps."""
    data = read_tokenizer_json(folder)
    return len(data["model"]["vocab"]) + len(data.get("added_tokens", []))


def pre_tokenizer_name(tokenizer_json: dict[str, Any], where: Path) -> str:
    """The llama.cpp pre-tokenizer equivalent to the tokenizer's; ConfigError naming it when there is none."""
    found = tokenizer_json.get("pre_tokenizer")
    for name, pattern in PRE_TOKENIZERS.items():
        if _matches(found, pattern):
            return name
    raise ConfigError(
        f"{where / 'tokenizer.json'}: no llama.cpp pre-tokenizer is known to split like {json.dumps(found)}",
        hint=f"known: {', '.join(PRE_TOKENIZERS)}; if you know llama.cpp's name for it, set pre_tokenizer",
    )


def add_vocab(writer: Any, folder: Path, vocab_size: int, pre_tokenizer: str | None = None) -> str:
    """Write tokens, types, merges, special ids, add-bos/eos and chat template; return the pre-tokenizer name."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer_json = read_tokenizer_json(folder)
    pre = pre_tokenizer or pre_tokenizer_name(tokenizer_json, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ConfigError(f"{folder}: the tokenizer has token id {max(by_id)}, beyond config.json's vocab_size "
                          f"{vocab_size}", hint="resize the model's embeddings to the tokenizer before converting")
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            # llama.cpp matches added tokens on raw text, so they are stored as text, pre-normalized
            text = token if added[i].normalized else tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # what the transformers tokenizer really does, whatever the config files claim
    ids = tokenizer("a")["input_ids"]
    special.add_special_token = {
        "bos": tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id,
    }
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)
    return pre
