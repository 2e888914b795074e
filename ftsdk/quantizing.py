"""Quantizing a model with a quantizer plugin: the job a plugin receives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuantizeJob:
    """One quantization, checked and ready: what :meth:`ftsdk.kinds.Quantizer.quantize` works on."""

    #: the model to quantize: a transformers folder, or a PEFT adapter folder for quantizers accepting adapters
    source: Path
    #: "model" or "adapter"
    source_kind: str
    #: the empty folder to write into (a temporary sibling of the final output)
    output: Path
    #: calibration texts, when the quantizer ``uses_calibration``; else None
    calibration: list[str] | None = None
