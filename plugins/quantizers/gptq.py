"""GPTQ through GPT-QModel: weights rounded layer by layer to 2-8 bits, correcting the error on calibration texts.

The output is a transformers folder in the GPTQ (v1) layout that vLLM, SGLang, TGI and transformers
(with ``optimum`` and ``gptqmodel``) load: ``config.json`` carries the ``quantization_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ftsdk import Quantizer, hookimpl
from ftsdk_plugins.quantizers._gptqmodel import (
    REQUIRES,
    GPTQModelConfig,
    check_widths,
    quantize_and_score,
    resolve_device,
)

if TYPE_CHECKING:
    from ftsdk.plugin.jobs import QuantizeJob

GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)


class GPTQConfig(GPTQModelConfig):
    """Options of a GPTQ checkpoint."""

    bits: Literal[2, 3, 4, 8] = Field(
        4, description="Bits per weight: 4 is the usual serving trade-off (~0.27 of fp16 with group_size 128); 8 is "
        "nearly lossless; 3 and 2 lose quality fast and few GPU kernels run them.")
    group_size: Literal[GROUP_SIZES] = Field(  # type: ignore[valid-type]
        128, description="Input columns sharing one scale and zero point; smaller groups are more accurate and a "
        "little bigger (at 4 bits GPT-QModel estimates 4.85 bits/weight for g32, ~4.2 for g128). -1: one group per row. Must divide the input "
        "width of every layer.")
    desc_act: bool = Field(
        False, description="Quantize columns in order of decreasing activation size (act-order): better accuracy, "
        "slower kernels on some runtimes (exllama, Marlin reorder at load).")
    act_group_aware: bool | None = Field(
        None, description="GPT-QModel's group-aware reordering: most of desc_act's gain with no runtime cost. "
        "Default: on unless desc_act is on; it cannot be combined with desc_act.")
    sym: bool = Field(True, description="Symmetric quantization (no zero point): what most GPU kernels (Marlin, "
                      "exllama) expect. False keeps a zero point per group.")
    damp_percent: float = Field(
        0.05, gt=0, lt=1, description="Dampening added to the Hessian's diagonal, as a fraction of its mean; raise "
        "it if quantization reports a non-positive-definite Hessian.")
    true_sequential: bool = Field(
        True, description="Quantize the sub-layers of a block one after the other, each seeing the already "
        "quantized ones' outputs (more accurate, a little slower).")

    @model_validator(mode="after")
    def _ordering(self) -> GPTQConfig:
        if self.desc_act and self.act_group_aware:
            raise ValueError("desc_act and act_group_aware cannot both be on; keep one (act_group_aware: "
                             "no runtime cost; desc_act: the classic act-order)")
        return self


class GPTQQuantizer(Quantizer):
    """Quantize a transformers model to a GPTQ checkpoint with GPT-QModel."""

    name = "gptq"
    summary = "GPTQ via GPT-QModel: 2/3/4/8-bit checkpoints for vLLM, TGI and transformers, calibrated"
    Config = GPTQConfig
    requires = REQUIRES
    install_hint = "pip install 'ftsdk[gptq]'"
    produces = "model"
    accepts = ("model",)
    uses_calibration = True

    config: GPTQConfig

    def check(self, source: Path, source_kind: str) -> None:
        resolve_device(self.config.device)
        check_widths("gptq", source, self.config.group_size, GROUP_SIZES)

    def gptqmodel_kwargs(self) -> dict[str, Any]:
        """The arguments of the ``gptqmodel.GPTQConfig`` these options make (the GPTQ v1 layout servers read)."""
        c = self.config
        return {"bits": c.bits, "group_size": c.group_size, "desc_act": c.desc_act, "sym": c.sym,
                "act_group_aware": c.act_group_aware if c.act_group_aware is not None else not c.desc_act,
                "damp_percent": c.damp_percent, "true_sequential": c.true_sequential, "format": "gptq"}

    def quantize(self, job: QuantizeJob) -> dict[str, Any]:
        return quantize_and_score(job, self.config, "GPTQConfig", self.gptqmodel_kwargs(),
                                  {"cpu": "auto", "cuda": "auto"}, "gptq")


@hookimpl
def register_quantizers(register):
    register(GPTQQuantizer)
