"""What differs per architecture when a transformers folder becomes a GGUF: one :class:`Architecture` each.

Each entry mirrors the class llama.cpp's ``convert_hf_to_gguf.py`` registers for those transformers
architectures (``conversion/llama.py``, ``qwen.py``, ``gemma.py``, ``phi.py``): the llama.cpp graph
(``gguf.MODEL_ARCH``), whether Q/K rows are permuted (Llama's rotary layout), norm weights stored as ``w``
where llama.cpp multiplies by ``w + 1`` (Gemma), the extra metadata keys (sliding window, soft-capping,
RoPE scaling) and extra tensors (Llama 3 ``rope_freqs``, Phi-3 LongRoPE factors). ``check`` refuses, before
any weight is read, configs llama.cpp would run differently from transformers. Light: no import of gguf or
numpy at module level; the writer functions import them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Config = dict[str, Any]


def head_dim(config: Config) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def kv_heads(config: Config) -> int:
    return config.get("num_key_value_heads") or config["num_attention_heads"]


def rope_parameters(config: Config) -> dict[str, Any]:
    """RoPE parameters as transformers 5 saves them (``rope_parameters``) or older folders (``rope_scaling``,
    ``rope_theta``); for per-layer-type parameters (Gemma 3) the full-attention ones, as llama.cpp reads them."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params = dict(params.get("full_attention", params))
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params["type"]
    params.setdefault("rope_type", "default")
    return params


@dataclass(frozen=True)
class Architecture:
    """How one family of transformers architectures is written for one llama.cpp graph."""

    #: llama.cpp graph, a member name of ``gguf.MODEL_ARCH`` (LLAMA, QWEN2, GEMMA2...)
    gguf_arch: str
    #: config.json ``architectures`` values converted this way
    hf_names: tuple[str, ...]
    #: Q/K weight rows (and biases) reordered from the transformers rotary halves to GGML's pairs (Llama)
    permute_qk: bool = False
    #: added to every ``*norm.weight`` (Gemma's RMSNorm computes ``x * (1 + w)``; llama.cpp ``x * w``)
    norm_shift: float = 0.0
    #: RoPE types written (others refused): transformers' ``rope_type`` values
    rope_types: tuple[str, ...] = ("default", "linear")
    #: problems with a config that llama.cpp would run differently everywhere (refused; empty: convertible)
    check: Callable[[Config], list[str]] = field(default=lambda config: [])
    #: differences that show only beyond some length (converted, with these as warnings), as llama.cpp's
    #: own converter converts them
    caveats: Callable[[Config], list[str]] = field(default=lambda config: [])
    #: writes the architecture's own metadata after the common keys
    metadata: Callable[[Any, Config], None] = field(default=lambda writer, config: None)
    #: GGUF tensors computed from the config, as (GGUF name, float32 array)
    extra_tensors: Callable[[Config], list[tuple[str, Any]]] = field(default=lambda config: [])
    #: the tokenizer's real size bounds the vocabulary and the embedding rows (Gemma 3 drops padding rows)
    trim_vocab: bool = False

    @property
    def name(self) -> str:
        """llama.cpp's name of the graph (``general.architecture``)."""
        return self.gguf_arch.lower()


# -- Llama, Mistral ---------------------------------------------------------------------------------------


def _llama_metadata(writer: Any, config: Config) -> None:
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim(config))


def llama3_rope_factors(config: Config) -> list[tuple[str, Any]]:
    """Llama 3.1+ ``rope_type: llama3``: the per-frequency factors llama.cpp reads from ``rope_freqs``."""
    rope = rope_parameters(config)
    if rope["rope_type"] != "llama3":
        return []
    dim, base = head_dim(config), rope["rope_theta"]
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    import torch  # the reference computes the frequencies in torch float32: the same bits here

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return [("rope_freqs.weight", torch.tensor(factors, dtype=torch.float32).numpy())]


def _window_caveat(config: Config, graph: str, enabled: bool = True) -> list[str]:
    window = config.get("sliding_window")
    if enabled and window and window < config["max_position_embeddings"]:
        return [f"sliding_window {window} is below max_position_embeddings {config['max_position_embeddings']}: "
                f"llama.cpp's {graph} graph attends to the whole context, so its outputs differ from transformers' "
                f"on sequences longer than {window} tokens"]
    return []


LLAMA = Architecture("LLAMA", ("LlamaForCausalLM",), permute_qk=True, rope_types=("default", "linear", "llama3"),
                     metadata=_llama_metadata, extra_tensors=llama3_rope_factors)
MISTRAL = Architecture("LLAMA", ("MistralForCausalLM",), permute_qk=True, rope_types=("default", "linear", "llama3"),
                       caveats=lambda config: _window_caveat(config, "llama"), metadata=_llama_metadata, extra_tensors=llama3_rope_factors)

# -- Qwen2 / Qwen2.5, Qwen3 -------------------------------------------------------------------------------


def _qwen_caveat(config: Config) -> list[str]:
    return _window_caveat(config, "qwen", bool(config.get("use_sliding_window")))


QWEN2 = Architecture("QWEN2", ("Qwen2ForCausalLM",), caveats=_qwen_caveat)
QWEN3 = Architecture("QWEN3", ("Qwen3ForCausalLM",), caveats=_qwen_caveat)

# -- Gemma 2, Gemma 3 -------------------------------------------------------------------------------------


def _gemma_scale_check(config: Config) -> list[str]:
    scalar = config.get("query_pre_attn_scalar")
    if scalar is not None and scalar != head_dim(config):
        return [f"query_pre_attn_scalar {scalar} differs from head_dim {head_dim(config)}: llama.cpp scales "
                "attention by 1/sqrt(head_dim) (only Gemma 2 27B's own sizes get another scale)"]
    return []


def _layer_types_check(config: Config, expected: Callable[[int], str], pattern: str) -> list[str]:
    layers = config.get("layer_types")
    wanted = [expected(i) for i in range(config["num_hidden_layers"])]
    if layers is not None and list(layers) != wanted:
        return [f"layer_types {layers} is not llama.cpp's fixed pattern ({pattern}): {wanted}"]
    return []


def _gemma2_check(config: Config) -> list[str]:
    return _gemma_scale_check(config) + _layer_types_check(
        config, lambda i: "sliding_attention" if (i + 1) % 2 else "full_attention", "sliding, full, ...")


def _gemma2_metadata(writer: Any, config: Config) -> None:
    writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
    writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    writer.add_sliding_window(config["sliding_window"])


def _gemma3_check(config: Config) -> list[str]:
    problems = _gemma_scale_check(config) + _layer_types_check(
        config, lambda i: "sliding_attention" if (i + 1) % 6 else "full_attention", "5 sliding, 1 full")
    if config.get("attn_logit_softcapping") is not None:
        problems.append("attn_logit_softcapping is set: llama.cpp's gemma3 graph has no attention soft-capping")
    return problems


def _gemma3_metadata(writer: Any, config: Config) -> None:
    if config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    if config.get("sliding_window_pattern") != 1:
        writer.add_sliding_window(config["sliding_window"])


GEMMA2 = Architecture("GEMMA2", ("Gemma2ForCausalLM",), norm_shift=1.0, check=_gemma2_check,
                      metadata=_gemma2_metadata)
GEMMA3 = Architecture("GEMMA3", ("Gemma3ForCausalLM",), norm_shift=1.0, check=_gemma3_check,
                      metadata=_gemma3_metadata, trim_vocab=True)

# -- Phi-3 ------------------------------------------------------------------------------------------------


def _phi3_rope(config: Config) -> tuple[dict[str, Any], int, int]:
    rope = rope_parameters(config)
    original = rope.get("original_max_position_embeddings") or config.get("original_max_position_embeddings") or \
        config["max_position_embeddings"]
    dims = int(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) * config["hidden_size"]) \
        // config["num_attention_heads"]
    return rope, int(original), dims


def _phi3_metadata(writer: Any, config: Config) -> None:
    _, original, dims = _phi3_rope(config)
    writer.add_rope_scaling_orig_ctx_len(original)
    writer.add_rope_dimension_count(dims)
    writer.add_sliding_window(config.get("sliding_window") or 0)
    attn_factor = phi3_attn_factor(config)
    if attn_factor is not None:
        writer.add_rope_scaling_attn_factors(attn_factor)


def _phi3_rope_factors(config: Config) -> list[tuple[str, Any]]:
    """LongRoPE (Phi-3 128k): the long and short factors as tensors (the attention factor is metadata)."""
    import numpy as np

    rope = rope_parameters(config)
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if not long:
        return []
    return [("rope_factors_long.weight", np.asarray(long, dtype=np.float32)),
            ("rope_factors_short.weight", np.asarray(short, dtype=np.float32))]


def phi3_attn_factor(config: Config) -> float | None:
    """LongRoPE's attention factor llama.cpp reads (``rope.scaling.attn_factor``); None without LongRoPE."""
    rope, original, _ = _phi3_rope(config)
    if not rope.get("long_factor"):
        return None
    scale = config["max_position_embeddings"] / original
    return math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0


def _phi3_check(config: Config) -> list[str]:
    rope, _, dims = _phi3_rope(config)
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if long and (not short or len(long) != len(short) or len(long) != dims // 2):
        return [f"LongRoPE needs long_factor and short_factor of {dims // 2} values each (rotary dimensions / 2)"]
    return []


PHI3 = Architecture("PHI3", ("Phi3ForCausalLM",), rope_types=("default", "longrope", "su"), check=_phi3_check,
                    caveats=lambda config: _window_caveat(config, "phi3 (its sliding window is disabled there)"),
                    metadata=_phi3_metadata, extra_tensors=_phi3_rope_factors)

#: every architecture converted here, by config.json ``architectures`` value
ARCHITECTURES: dict[str, Architecture] = {
    hf: arch for arch in (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA2, GEMMA3, PHI3) for hf in arch.hf_names
}
