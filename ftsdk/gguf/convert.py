"""A transformers folder written as one GGUF file (f32, f16 or bf16), on the ``gguf`` package's writer.

It writes what llama.cpp's ``convert_hf_to_gguf.py`` writes for the architectures of
:mod:`ftsdk.gguf.architectures` (Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 2, Gemma 3, Phi-3): the same
metadata keys, tensor names (``gguf.get_tensor_name_map`` of the architecture's llama.cpp graph) and tensor
transforms (Llama's Q/K rows permuted to GGML's rotary layout, Gemma's norms stored as ``w + 1``), 1-D tensors
kept in f32. One converter; what differs per architecture is described there. Tests compare the tensors with
llama.cpp's own converter and llama.cpp's logits with transformers' on the same token ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsdk.gguf.architectures import ARCHITECTURES, Architecture, head_dim, kv_heads, rope_parameters
from ftsdk.gguf.types import TYPES
from ftsdk.gguf.vocab import add_vocab, tokenizer_rows
from ftsdk.plugin.errors import ConfigError, ModelLoadError

#: architectures (config.json ``architectures``) converted here
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
_FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}  # gguf.LlamaFileType ALL_F32, MOSTLY_F16, MOSTLY_BF16


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; ModelLoadError naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist", hint=f"is {path.parent} a transformers model or adapter folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc


def architecture(config: dict[str, Any]) -> Architecture:
    """The :class:`Architecture` of a config.json already checked by :func:`check_model_config`."""
    return ARCHITECTURES[(config.get("architectures") or [config.get("model_type")])[0]]


def check_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a model this converter supports; ConfigError saying why not, before any weight is read."""
    config = read_json(folder / "config.json")
    name = (config.get("architectures") or [config.get("model_type")])[0]
    if name not in ARCHITECTURES:
        raise ConfigError(
            f"{folder}: the gguf quantizer converts {', '.join(SUPPORTED_ARCHITECTURES)} models, not {name}",
            hint="convert it with llama.cpp's convert_hf_to_gguf.py, or quantize with another quantizer (gptq, bnb)",
        )
    arch = ARCHITECTURES[name]
    rope_type = rope_parameters(config)["rope_type"]
    if rope_type not in arch.rope_types:
        raise ConfigError(f"{folder}: RoPE scaling {rope_type!r} of {name} is not converted here "
                          f"(converted: {', '.join(arch.rope_types)})",
                          hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    if config.get("mlp_bias") or (config.get("attention_bias") and not arch.permute_qk):
        raise ConfigError(f"{folder}: {name} models with {'MLP' if config.get('mlp_bias') else 'attention'} biases "
                          "are not converted here", hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    problems = arch.check(config)
    if problems:
        raise ConfigError(f"{folder}: llama.cpp's {arch.name} graph would not compute what transformers computes: "
                          + "; ".join(problems), hint="convert a model with the standard configuration of its family")
    return config


def caveats(config: dict[str, Any]) -> list[str]:
    """Differences from transformers that llama.cpp shows only on long inputs (converted anyway, as llama.cpp does)."""
    return architecture(config).caveats(config)


def row_sizes(config: dict[str, Any]) -> dict[str, int]:
    """Elements per row (GGML ``ne[0]``) of each 2-D tensor family: what quantization blocks must divide."""
    hidden = config["hidden_size"]
    return {
        "token_embd, output, attn_q/k/v, ffn_gate/up": hidden,
        "attn_output": config["num_attention_heads"] * head_dim(config),
        "ffn_down": config["intermediate_size"],
    }


def permute(weight: Any, n_head: int) -> Any:
    """Q/K rows from the transformers rotary layout (halves) to GGML's (interleaved pairs), per head."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in read_json(index)["weight_map"].values()})
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise ModelLoadError(f"{folder} has no model.safetensors", hint="save the model with save_pretrained (safetensors)")


#: safetensors dtypes read here -> the GGML type ``gguf.quants.dequantize`` widens to float32 from
_SOURCE_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16"}


@dataclass(frozen=True)
class _Planned:
    """One tensor to write: read from a safetensors file (``source``) or computed from the config (``array``)."""

    name: str
    source: Any = None  # gguf.utility.LocalTensor: dtype, shape and the file byte range
    array: Any = None  # float32 numpy array (extra tensors)
    #: heads to permute the rows by (Llama's Q and K), else None
    permute_heads: int | None = None
    #: added to the weight (Gemma's norms)
    shift: float = 0.0
    #: rows kept (Gemma 3 drops the embedding rows beyond the tokenizer), else None
    rows: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        if self.array is not None:
            return tuple(self.array.shape)
        shape = tuple(self.source.shape)
        return (min(self.rows, shape[0]), *shape[1:]) if self.rows is not None else shape


def _plan(folder: Path, config: dict[str, Any], arch: Architecture, vocab_rows: int) -> list[_Planned]:
    """Every tensor's GGUF name and shape, read from the safetensors headers only; the tied lm_head left out."""
    import gguf
    from gguf.utility import SafetensorsLocal

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], config["num_hidden_layers"])
    heads = {"q_proj": config["num_attention_heads"], "k_proj": kv_heads(config)}
    plan = [_Planned(name, array=array) for name, array in arch.extra_tensors(config)]
    for path in _weight_files(folder):
        with SafetensorsLocal(path) as tensors:  # names sorted, as safetensors.safe_open lists them
            for name, tensor in tensors.items():
                if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and config.get("tie_word_embeddings")):
                    continue
                new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ConfigError(f"{path}: tensor {name} has no llama.cpp {arch.name} counterpart",
                                      hint="convert it with llama.cpp's convert_hf_to_gguf.py")
                if tensor.dtype not in _SOURCE_DTYPES:
                    raise ModelLoadError(f"{path}: tensor {name} is {tensor.dtype}; the GGUF converter reads "
                                         f"{', '.join(_SOURCE_DTYPES)} weights", hint="save the model in float32 or bf16")
                module = name.rsplit(".", 2)[-2] if "." in name else name
                plan.append(_Planned(
                    new_name, tensor,
                    permute_heads=heads.get(module) if arch.permute_qk else None,
                    shift=arch.norm_shift if name.endswith("norm.weight") else 0.0,
                    rows=vocab_rows if arch.trim_vocab and name.endswith("embed_tokens.weight") else None,
                ))
    return plan


def _stored(planned: _Planned, out_type: str) -> tuple[Any, int, Any]:
    """(numpy dtype given to the writer, bytes, raw GGML type or None) of a planned weight in ``out_type``."""
    import gguf
    import numpy as np

    count = math.prod(planned.shape)
    if len(planned.shape) == 1 or out_type == "f32":
        return np.dtype(np.float32), 4 * count, None
    if out_type == "f16":
        return np.dtype(np.float16), 2 * count, None
    return np.dtype(np.float32), 2 * count, gguf.GGMLQuantizationType.BF16


def _data(planned: _Planned, out_type: str) -> Any:
    """The tensor as written: float32, transformed as planned, then in ``out_type`` (1-D tensors stay f32).

    Read through its own memory map (unmapped when the array is dropped), so one weight is resident at a time.
    """
    import gguf
    import numpy as np

    if planned.array is not None:
        data = planned.array
    else:
        source = planned.source
        rows = source.mmap_bytes().reshape(*source.shape[:-1], -1)  # rows of bytes
        if planned.rows is not None:
            rows = rows[: planned.rows]
        # float32 rows: a view for F32, an exact widening for F16/BF16
        data = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType[_SOURCE_DTYPES[source.dtype]])
    if planned.permute_heads is not None:
        data = permute(data, planned.permute_heads)
    if planned.shift:
        data = data + np.float32(planned.shift)
    if data.ndim == 1 or out_type == "f32":
        return data
    if out_type == "f16":
        return data.astype(np.float16)
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)


def model_name(folder: Path, config: dict[str, Any], arch: Architecture) -> str:
    """``general.name``: the config's name or the folder's. llama.cpp strips the whitespace after every special
    token of a model whose name contains phi3 or phi-3, as Phi-3's own tokenizer does (``rstrip``): a Phi-3
    whose tokenizer strips gets `` (phi3)`` appended to a name without it, so both tokenize alike."""
    name = str(config.get("_model_name_or_path") or folder.name)
    if arch.gguf_arch == "PHI3" and not any(tag in name.lower() for tag in ("phi3", "phi-3")):
        added = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
        if any(token.get("special") and token.get("rstrip") for token in added):
            name += " (phi3)"
    return name


def _add_metadata(writer: Any, folder: Path, config: dict[str, Any], arch: Architecture, out_type: str) -> None:
    """The keys llama.cpp's converter writes for every text model (``TextModel.set_gguf_parameters``), then the
    architecture's own."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_name(folder, config, arch))
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(kv_heads(config))
    rope = rope_parameters(config)
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    sliding_theta = ((config.get("rope_parameters") or {}).get("sliding_attention") or {}).get("rope_theta")
    if sliding_theta is not None:
        writer.add_rope_freq_base_swa(float(sliding_theta))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim") is not None:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_file_type(_FILE_TYPE[out_type])
    arch.metadata(writer, config)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def convert_model(folder: str | Path, out_file: str | Path, out_type: str = "f32", *,
                  pre_tokenizer: str | None = None) -> dict[str, Any]:
    """Write the transformers model in ``folder`` as the GGUF ``out_file`` with 2-D weights in ``out_type``.

    Returns facts: the pre-tokenizer chosen, the tensor count and the count of 2-D tensors per GGML type.
    """
    import gguf

    folder, out_file = Path(folder), Path(out_file)
    if out_type not in _FILE_TYPE:
        raise ConfigError(f"convert_model writes f32, f16 or bf16, not {out_type!r}",
                          hint=f"quantize to {out_type} with ftsdk.gguf.quantize.quantize_gguf")
    config = check_model_config(folder)
    arch = architecture(config)
    vocab_size = min(config["vocab_size"], tokenizer_rows(folder)) if arch.trim_vocab else config["vocab_size"]
    plan = _plan(folder, config, arch, vocab_size)
    writer = gguf.GGUFWriter(out_file, arch.name)
    _add_metadata(writer, folder, config, arch, out_type)
    pre = add_vocab(writer, folder, vocab_size, pre_tokenizer)
    for planned in plan:
        writer.add_tensor_info(planned.name, planned.shape, *_stored(planned, out_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for planned in plan:  # in the order of the tensor infos
        writer.write_tensor_data(_data(planned, out_type))
    writer.close()
    matrices = sum(len(p.shape) >= 2 for p in plan)
    return {"architecture": arch.name, "pre_tokenizer": pre, "tensors": len(plan), "type": TYPES[out_type].name,
            "tensor_types": {TYPES[out_type].ggml: matrices} if matrices else {}}

