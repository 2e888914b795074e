"""Inputs for quantizer and merger tests: a tiny model in another dtype, random LoRA adapters, calibration texts."""

from __future__ import annotations

from pathlib import Path


def cast_model(base: str | Path, folder: str | Path, dtype: str) -> Path:
    """A copy of the model folder ``base`` whose floating weights are stored in ``dtype`` ("bfloat16", ...)."""
    import torch

    from ftsdk.merging.testing import variant

    target = getattr(torch, dtype)
    return variant(Path(base), Path(folder), lambda name, t: t.to(target) if t.is_floating_point() else t)


def make_lora_adapter(base: str | Path, folder: str | Path, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA adapter of ``base`` on q_proj and v_proj (fused qkv_proj where the architecture fuses them, as
    Phi-3) with random A and B (as if trained), saved by PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [n for n in ("q_proj", "v_proj") if n in names] or [n for n in ("qkv_proj",) if n in names]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return Path(folder)


def calibration_texts(count: int = 32, seed: int = 0) -> list[str]:
    """Plain texts of the tiny color task (question and answer), for quantizers that calibrate."""
    from ftsdk.testing.tiny import task_rows

    rows = task_rows(count, seed, system=False)
    return [" ".join(m["content"] for m in row["messages"]) for row in rows]
