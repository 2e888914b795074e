"""AWQ through GPT-QModel: 4-bit weights whose salient channels are protected by scales found on calibration texts.

The output is a transformers folder in the AutoAWQ layout (``quant_method: awq``, ``version: gemm``) that vLLM,
SGLang, TGI and transformers (with ``gptqmodel``) load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ftsdk import Quantizer, hookimpl
from ftsdk.plugin.errors import ConfigError
from ftsdk_plugins.quantizers._gptqmodel import (
    REQUIRES,
    GPTQModelConfig,
    check_widths,
    quantize_and_score,
    resolve_device,
)

if TYPE_CHECKING:
    from ftsdk.plugin.jobs import QuantizeJob

GROUP_SIZES = (-1, 16, 32, 64, 128)
#: eight 4-bit values are packed into each int32 along the output dimension
PACK = 8
#: GPT-QModel's AWQ clip search walks output channels in batches of 64 (or 256), except in these layers
CLIP_BATCH = 64
NOT_CLIPPED = ("q_", "k_", "query", "key", "Wqkv")


class AWQConfig(GPTQModelConfig):
    """Options of an AWQ checkpoint."""

    bits: Literal[4] = Field(4, description="Bits per weight: AWQ kernels (GEMM, GEMV, Marlin in vLLM) are 4-bit.")
    group_size: Literal[GROUP_SIZES] = Field(  # type: ignore[valid-type]
        128, description="Input columns sharing one scale (and zero point); 128 is what AWQ checkpoints and kernels "
        "usually use, 64 or 32 are more accurate and a little bigger. Must divide every layer's input width.")
    zero_point: bool = Field(
        True, description="Asymmetric quantization with a zero point per group (AWQ's default); False is symmetric.")
    format: Literal["gemm", "gemv", "gemv_fast"] = Field(
        "gemm", description="Packed layout (AutoAWQ's 'version'): gemm is what vLLM, TGI and transformers read and "
        "is fastest for batches; gemv and gemv_fast suit batch-1 decoding with their own CUDA kernels and are "
        "written only on a CUDA GPU.")


class AWQQuantizer(Quantizer):
    """Quantize a transformers model to a 4-bit AWQ checkpoint with GPT-QModel."""

    name = "awq"
    summary = "AWQ via GPT-QModel: activation-aware 4-bit checkpoints for vLLM, TGI and transformers, calibrated"
    Config = AWQConfig
    requires = REQUIRES
    install_hint = "pip install 'ftsdk[awq]'"
    produces = "model"
    accepts = ("model",)
    uses_calibration = True

    config: AWQConfig

    def check(self, source: Path, source_kind: str) -> None:
        device = resolve_device(self.config.device)
        if device == "cpu" and self.config.format != "gemm":
            raise ConfigError(f"awq format '{self.config.format}' is packed by GPT-QModel's CUDA kernels only, and "
                              "this run quantizes on the CPU", hint="use format: gemm, or quantize on a CUDA GPU")
        linears = check_widths("awq", source, self.config.group_size, GROUP_SIZES)
        for name, (_, out) in linears.items():
            need = PACK if any(part in name for part in NOT_CLIPPED) else CLIP_BATCH
            if out % need:
                raise ConfigError(f"awq cannot quantize {name}: its {out} outputs are not a multiple of {need}, "
                                  "which GPT-QModel's AWQ needs (packing by 8, clip search by 64)",
                                  hint="quantize this model with the gptq quantizer instead")

    def gptqmodel_kwargs(self) -> dict[str, Any]:
        """The arguments of the ``gptqmodel.AWQConfig`` these options make."""
        c = self.config
        return {"bits": c.bits, "group_size": c.group_size, "sym": not c.zero_point, "format": c.format}

    def quantize(self, job: QuantizeJob) -> dict[str, Any]:
        # on CPU only the torch kernel packs the GEMM layout; on CUDA GPT-QModel picks the kernel of the format
        return quantize_and_score(job, self.config, "AWQConfig", self.gptqmodel_kwargs(),
                                  {"cpu": "awq_torch", "cuda": "auto"}, "awq")


@hookimpl
def register_quantizers(register):
    register(AWQQuantizer)
