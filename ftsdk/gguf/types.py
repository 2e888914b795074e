"""The GGUF output types ftsdk writes, and what llama.cpp does when a tensor's rows do not fit a type's blocks.

Light: no llama_cpp import, so checks run before any work.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GGUFType:
    """One output type: ``ftype`` names llama.cpp's ``LLAMA_FTYPE_*`` constant, ``ggml`` its main tensor type."""

    name: str
    ftype: str
    ggml: str
    #: elements per quantization block: a tensor's rows must be a multiple of it
    block: int
    #: the type llama.cpp uses instead when a row does not fit ``block`` (None: it cannot fall back)
    fallback: str | None = None

    @property
    def is_float(self) -> bool:
        return self.ggml in FLOAT_GGML

    @property
    def is_k_quant(self) -> bool:
        return self.ggml.endswith("_K")


FLOAT_GGML = ("F32", "F16", "BF16")
#: block size of the fallback types llama.cpp picks for k-quants (llama-quant.cpp, llama_tensor_get_type)
FALLBACK_BLOCK = {"Q5_0": 32, "Q5_1": 32, "Q8_0": 32, "IQ4_NL": 32}


def _k(name: str, ftype: str, ggml: str, fallback: str) -> GGUFType:
    return GGUFType(name, ftype, ggml, 256, fallback)


TYPES: dict[str, GGUFType] = {
    t.name: t
    for t in (
        GGUFType("f32", "LLAMA_FTYPE_ALL_F32", "F32", 1),
        GGUFType("f16", "LLAMA_FTYPE_MOSTLY_F16", "F16", 1),
        GGUFType("bf16", "LLAMA_FTYPE_MOSTLY_BF16", "BF16", 1),
        GGUFType("q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", "Q8_0", 32),
        GGUFType("q5_1", "LLAMA_FTYPE_MOSTLY_Q5_1", "Q5_1", 32),
        GGUFType("q5_0", "LLAMA_FTYPE_MOSTLY_Q5_0", "Q5_0", 32),
        GGUFType("q4_1", "LLAMA_FTYPE_MOSTLY_Q4_1", "Q4_1", 32),
        GGUFType("q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_0", 32),
        _k("q6_k", "LLAMA_FTYPE_MOSTLY_Q6_K", "Q6_K", "Q8_0"),
        _k("q5_k_m", "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q5_K", "Q5_1"),
        _k("q5_k_s", "LLAMA_FTYPE_MOSTLY_Q5_K_S", "Q5_K", "Q5_1"),
        _k("q4_k_m", "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q4_K", "Q5_0"),
        _k("q4_k_s", "LLAMA_FTYPE_MOSTLY_Q4_K_S", "Q4_K", "Q5_0"),
        _k("q3_k_l", "LLAMA_FTYPE_MOSTLY_Q3_K_L", "Q3_K", "IQ4_NL"),
        _k("q3_k_m", "LLAMA_FTYPE_MOSTLY_Q3_K_M", "Q3_K", "IQ4_NL"),
        _k("q3_k_s", "LLAMA_FTYPE_MOSTLY_Q3_K_S", "Q3_K", "IQ4_NL"),
        _k("q2_k", "LLAMA_FTYPE_MOSTLY_Q2_K", "Q2_K", "IQ4_NL"),
    )
}
FLOAT_TYPES = tuple(name for name, t in TYPES.items() if t.is_float)


def predict_rows(rows: dict[str, int], gguf_type: GGUFType) -> tuple[dict[str, str], bool]:
    """What llama.cpp will do with tensors of these row sizes (``{tensor family: elements per row}``).

    Returns ``({family: "Q5_0 (row 576 is not a multiple of 256)"}, anything_quantized)``: the families
    left at another type than asked, and whether any family gets a quantized type at all.
    """
    if gguf_type.is_float:
        return {}, True
    misfits: dict[str, str] = {}
    quantized = False
    for family, row in rows.items():
        if row % gguf_type.block == 0:
            quantized = True
            continue
        fallback = gguf_type.fallback
        if fallback is not None and row % FALLBACK_BLOCK[fallback] == 0:
            quantized = True
        else:
            fallback = "F16"
        misfits[family] = f"{fallback} (row {row} is not a multiple of {gguf_type.block})"
    return misfits, quantized
