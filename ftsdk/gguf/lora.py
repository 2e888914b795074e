"""A PEFT LoRA adapter folder written as a GGUF LoRA adapter, which ``llama_cpp.Llama(lora_path=...)`` applies.

The layout is what llama.cpp's ``convert_lora_to_gguf.py`` writes and ``llama_adapter_lora_init`` checks:
``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``; per base weight ``W`` two tensors
``W.lora_a`` (PEFT's A, ``r x in``) and ``W.lora_b`` (B, ``out x r``), named for the base model's llama.cpp
graph (:mod:`ftsdk.gguf.architectures`: Phi-3's fused ``qkv_proj`` is ``attn_qkv``), B's rows of Q/K permuted
like the base weights where the architecture permutes them (Llama, Mistral). llama.cpp scales B·A by ``alpha / r``, PEFT by ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ftsdk.gguf.architectures import kv_heads
from ftsdk.gguf.convert import architecture, check_model_config, permute, read_json
from ftsdk.plugin.errors import ConfigError, ModelLoadError

ADAPTER_TYPES = ("f32", "f16", "bf16")
_PREFIX = "base_model.model."


def base_folder(adapter: Path, base: str | Path | None) -> Path:
    """The base model folder: ``base`` or the adapter's ``base_model_name_or_path`` when that is a local folder."""
    named = base or read_json(adapter / "adapter_config.json").get("base_model_name_or_path")
    if not named or not (Path(named) / "config.json").is_file():
        raise ConfigError(f"{adapter}: the GGUF LoRA needs the base model's config.json, and {named!r} is not a local "
                          "model folder", hint="set base_model to the base model's folder")
    return Path(named)


def check_adapter(adapter: Path, base: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """adapter_config.json and the base's config.json, if llama.cpp can apply this adapter; else ConfigError."""
    config = read_json(adapter / "adapter_config.json")
    where = adapter / "adapter_config.json"
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"{where}: llama.cpp applies LoRA adapters only, not {config.get('peft_type')}",
                          hint="merge the adapter (ftsdk export) and quantize the merged model")
    unsupported = {"use_dora": "DoRA", "modules_to_save": "modules_to_save", "rank_pattern": "per-module ranks",
                   "alpha_pattern": "per-module alphas", "fan_in_fan_out": "fan_in_fan_out"}
    for key, what in unsupported.items():
        if config.get(key):
            raise ConfigError(f"{where}: {what} cannot be expressed in a GGUF LoRA",
                              hint="merge the adapter (ftsdk export) and quantize the merged model")
    if config.get("bias", "none") != "none":
        raise ConfigError(f"{where}: trained biases (bias={config['bias']!r}) cannot be expressed in a GGUF LoRA",
                          hint="merge the adapter (ftsdk export) and quantize the merged model")
    return config, check_model_config(base_folder(adapter, base))


def gguf_alpha(config: dict[str, Any]) -> float:
    """The alpha llama.cpp needs so that ``alpha / r`` equals PEFT's scaling."""
    alpha, rank = float(config["lora_alpha"]), int(config["r"])
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def convert_adapter(adapter: str | Path, out_file: str | Path, out_type: str = "f32", *,
                    base: str | Path | None = None) -> dict[str, Any]:
    """Write the PEFT LoRA in ``adapter`` as the GGUF LoRA ``out_file``; return facts (alpha, rank, tensors)."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    adapter, out_file = Path(adapter), Path(out_file)
    if out_type not in ADAPTER_TYPES:
        raise ConfigError(f"a GGUF LoRA is written in {', '.join(ADAPTER_TYPES)}, not {out_type}",
                          hint="set type: f16 (or f32) for adapters")
    config, base_config = check_adapter(adapter, base)
    weights_path = adapter / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise ModelLoadError(f"{adapter} has no adapter_model.safetensors", hint="save the adapter with save_pretrained")
    arch = architecture(base_config)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], base_config["num_hidden_layers"])
    heads = {"q_proj": base_config["num_attention_heads"], "k_proj": kv_heads(base_config)} if arch.permute_qk else {}
    writer = gguf.GGUFWriter(out_file, arch.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, gguf_alpha(config))
    count = 0
    with safe_open(weights_path, framework="pt") as weights:
        for name in sorted(weights.keys()):
            module, _, part = name.removeprefix(_PREFIX).rpartition(".lora_")
            target = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
            if target is None or part not in ("A.weight", "B.weight"):
                raise ConfigError(f"{weights_path}: tensor {name} has no llama.cpp {arch.name} counterpart",
                                  hint="target only the attention and MLP projections (target_modules: all-linear)")
            tensor = weights.get_tensor(name).float()
            short = module.rsplit(".", 1)[-1]
            if part == "B.weight" and short in heads:
                tensor = permute(tensor, heads[short])
            data = tensor.numpy()
            suffix = ".lora_a" if part == "A.weight" else ".lora_b"
            if out_type == "f16":
                writer.add_tensor(target + suffix, data.astype(np.float16))
            elif out_type == "bf16":
                qtype = gguf.GGMLQuantizationType.BF16
                writer.add_tensor(target + suffix, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            else:
                writer.add_tensor(target + suffix, data)
            count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"alpha": gguf_alpha(config), "rank": int(config["r"]), "tensors": count, "type": out_type}
