"""A transformers Llama-family folder written as one GGUF file (f32, f16 or bf16), on the ``gguf`` package's writer.

It writes what llama.cpp's ``convert_hf_to_gguf.py`` writes for ``LlamaForCausalLM`` (its ``LlamaModel``):
the same metadata keys, tensor names (``gguf.get_tensor_name_map``), the Q/K rows permuted from the
transformers rotary layout to GGML's, 1-D tensors kept in f32. Tests check llama.cpp's logits against
transformers' on the same token ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsdk.errors import ConfigError, ModelLoadError
from ftsdk.gguf.types import TYPES
from ftsdk.gguf.vocab import add_vocab

#: architectures (config.json ``architectures``) converted here: llama.cpp's ``llama`` graph
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
_FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}  # gguf.LlamaFileType ALL_F32, MOSTLY_F16, MOSTLY_BF16


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; ModelLoadError naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist", hint=f"is {path.parent} a transformers model or adapter folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc


def check_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a model this converter supports; ConfigError saying why not, before any weight is read."""
    config = read_json(folder / "config.json")
    architectures = config.get("architectures") or [config.get("model_type")]
    if architectures[0] not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"{folder}: the gguf quantizer converts {', '.join(SUPPORTED_ARCHITECTURES)} models, not {architectures[0]}",
            hint="convert it with llama.cpp's convert_hf_to_gguf.py, or quantize with another quantizer (gptq, bnb)",
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ConfigError(f"{folder}: RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not converted here",
                          hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ConfigError(f"{folder}: Llama models with biases are not converted here",
                          hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    return config


def head_dim(config: dict[str, Any]) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


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
    """One weight to write: where it is read from and how it is reshaped."""

    name: str
    source: Any  # gguf.utility.LocalTensor: dtype, shape and the file byte range
    #: heads to permute the rows by (Q and K), else None
    permute_heads: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape


def _plan(folder: Path, config: dict[str, Any]) -> list[_Planned]:
    """Every weight's GGUF name and shape, read from the safetensors headers only; the tied lm_head left out."""
    import gguf
    from gguf.utility import SafetensorsLocal

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    plan = []
    for path in _weight_files(folder):
        with SafetensorsLocal(path) as tensors:  # names sorted, as safetensors.safe_open lists them
            for name, tensor in tensors.items():
                if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and config.get("tie_word_embeddings")):
                    continue
                new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ConfigError(f"{path}: tensor {name} has no llama.cpp counterpart",
                                      hint="convert it with llama.cpp's convert_hf_to_gguf.py")
                if tensor.dtype not in _SOURCE_DTYPES:
                    raise ModelLoadError(f"{path}: tensor {name} is {tensor.dtype}; the GGUF converter reads "
                                         f"{', '.join(_SOURCE_DTYPES)} weights", hint="save the model in float32 or bf16")
                permute_heads = heads if name.endswith("q_proj.weight") else (
                    kv_heads if name.endswith("k_proj.weight") else None)
                plan.append(_Planned(new_name, tensor, permute_heads))
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
    """The weight as written: float32, Q/K rows permuted, then in ``out_type`` (1-D tensors stay f32).

    Read through its own memory map (unmapped when the array is dropped), so one weight is resident at a time.
    """
    import gguf
    import numpy as np

    rows = planned.source.mmap_bytes().reshape(*planned.shape[:-1], -1)  # rows of bytes
    # float32 rows: a view for F32, an exact widening for F16/BF16
    data = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType[_SOURCE_DTYPES[planned.source.dtype]])
    if planned.permute_heads is not None:
        data = permute(data, planned.permute_heads)
    if data.ndim == 1 or out_type == "f32":
        return data
    if out_type == "f16":
        return data.astype(np.float16)
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)


def _add_metadata(writer: Any, folder: Path, config: dict[str, Any], out_type: str) -> None:
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(str(config.get("_model_name_or_path") or folder.name))
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim") is not None:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_file_type(_FILE_TYPE[out_type])
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
    plan = _plan(folder, config)
    writer = gguf.GGUFWriter(out_file, "llama")
    _add_metadata(writer, folder, config, out_type)
    pre = add_vocab(writer, folder, config["vocab_size"], pre_tokenizer)
    for planned in plan:
        writer.add_tensor_info(planned.name, planned.shape, *_stored(planned, out_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for planned in plan:  # in the order of the tensor infos
        writer.write_tensor_data(_data(planned, out_type))
    writer.close()
    matrices = sum(len(p.shape) >= 2 for p in plan)
    return {"pre_tokenizer": pre, "tensors": len(plan), "type": TYPES[out_type].name,
            "tensor_types": {TYPES[out_type].ggml: matrices} if matrices else {}}

