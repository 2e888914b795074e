"""GGUF: convert transformers folders and PEFT LoRA adapters to GGUF, quantize with llama.cpp, run and verify.

Modules: :mod:`~ftsdk.gguf.convert` (transformers folder -> f32/f16/bf16 GGUF), :mod:`~ftsdk.gguf.vocab`
(tokenizer metadata), :mod:`~ftsdk.gguf.quantize` (llama.cpp quantization and what it wrote),
:mod:`~ftsdk.gguf.lora` (PEFT LoRA -> GGUF LoRA), :mod:`~ftsdk.gguf.runtime` (``load_gguf``,
``gguf_sequence_nll``), :mod:`~ftsdk.gguf.verify` (GGUF vs transformers on the same token ids).
Nothing heavy is imported here.
"""

from __future__ import annotations

from pathlib import Path

from ftsdk.plugin.errors import ModelLoadError


def gguf_file(folder: str | Path) -> Path:
    """The one ``.gguf`` file in ``folder`` (the output of the gguf quantizer)."""
    folder = Path(folder)
    found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    if len(found) != 1:
        what = "is not a folder" if not folder.is_dir() else f"holds {len(found)} .gguf files, not one"
        raise ModelLoadError(f"{folder} {what}", hint="pass the output folder of the gguf quantizer, or the .gguf file")
    return found[0]
