"""Which model to load: a hub id or local folder (or a GGUF file), its revision, and whether its code may run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk.plugin.settings import StrictModel


class ModelSpec(StrictModel):
    """Which base model to load and how."""

    name: str = Field(
        "smollm2-135m",
        description="An alias (smollm2-135m), a local HF folder, a .gguf file, or a Hugging Face Hub id.",
        min_length=1,
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `name` (a folder or hub repo).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA when present, else CPU."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPUs that support it, float32 elsewhere (bf16 is slow on most CPUs)."
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub repo to run.")
    attn_implementation: Literal[
        "auto", "eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3"
    ] = Field(
        "auto",
        description="The attention kernel: auto lets transformers choose (sdpa where the model supports it); eager "
        "is plain PyTorch; flex_attention is torch's compiled attention; flash_attention_2/3 need CUDA and the "
        "flash-attn package (varlen kernels: what makes padding-free batches fast).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value
