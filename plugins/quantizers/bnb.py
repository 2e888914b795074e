"""bitsandbytes: a transformers checkpoint quantized to 4 bits (NF4/FP4) or 8 bits (LLM.int8) as it loads.

The saved folder reloads with ``AutoModelForCausalLM.from_pretrained(folder)``: its ``config.json`` carries the
``quantization_config``, so the same bitsandbytes layers come back with the same quantized weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ftsdk import PluginConfig, Quantizer, hookimpl
from ftsdk.plugin.errors import ConfigError

if TYPE_CHECKING:
    from ftsdk.plugin.jobs import QuantizeJob

#: options that only 4-bit quantization reads
FOUR_BIT_OPTIONS = ("quant_type", "double_quant", "compute_dtype")


class BnbConfig(PluginConfig):
    """Options of a bitsandbytes checkpoint."""

    bits: Literal[4, 8] = Field(
        4, description="4: NF4/FP4 weights, ~0.53 byte per weight; 8: LLM.int8, ~1 byte, closer to the original."
    )
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit data type: nf4 (normal float, for normally distributed weights) or fp4."
    )
    double_quant: bool = Field(True, description="4-bit: quantize the quantization constants too (~0.37 bit/weight less).")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="4-bit: dtype of the matmuls on dequantized weights (bfloat16 on recent GPUs)."
    )
    threshold: float = Field(
        6.0, ge=0, description="8-bit: outlier threshold of LLM.int8; activations above it stay in 16 bits."
    )
    skip_modules: list[str] = Field(
        default_factory=list,
        description="Module names kept unquantized besides the output head (e.g. a classifier 'score').",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the weights are quantized.")

    @model_validator(mode="after")
    def _options_match_bits(self) -> BnbConfig:
        # an option of the other width is an error only when it would change something (a dumped config
        # repeats every default, and must validate again)
        ignored = FOUR_BIT_OPTIONS if self.bits == 8 else ("threshold",)
        defaults = type(self).model_fields
        wrong = [name for name in ignored if getattr(self, name) != defaults[name].get_default()]
        if wrong:
            other = 4 if self.bits == 8 else 8
            raise ValueError(f"{', '.join(wrong)} appl{'ies' if len(wrong) == 1 else 'y'} to {other}-bit "
                             f"quantization only; remove it or set bits: {other}")
        return self


class BnbQuantizer(Quantizer):
    """Save a 4-bit or 8-bit bitsandbytes checkpoint of a transformers model."""

    name = "bnb"
    summary = "bitsandbytes: 4-bit NF4/FP4 or 8-bit LLM.int8 transformers checkpoints"
    Config = BnbConfig
    requires = ("bitsandbytes", "transformers", "torch")
    install_hint = "pip install 'ftsdk[bnb]'"
    produces = "model"
    accepts = ("model",)

    config: BnbConfig

    def quantization_config(self) -> Any:
        """The ``transformers.BitsAndBytesConfig`` the model loads with."""
        import torch
        from transformers import BitsAndBytesConfig

        skip = list(self.config.skip_modules) or None
        if self.config.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.config.threshold,
                                      llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.config.quant_type,
            bnb_4bit_use_double_quant=self.config.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, self.config.compute_dtype),
            llm_int8_skip_modules=skip,
        )

    def check(self, source: Path, source_kind: str) -> None:
        if self.config.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("bnb device 'cuda' was asked for, but no CUDA device is present",
                                  hint="set device: cpu (bitsandbytes quantizes on CPU too)")

    def load(self, source: Path) -> Any:
        """The source model loaded quantized (what :meth:`quantize` saves)."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            source, quantization_config=self.quantization_config(), device_map={"": self.config.device}
        )

    def quantize(self, job: QuantizeJob) -> dict[str, Any]:
        import bitsandbytes as bnb
        from transformers import AutoTokenizer

        model = self.load(job.source)
        layer = bnb.nn.Linear8bitLt if self.config.bits == 8 else bnb.nn.Linear4bit
        quantized = sum(isinstance(m, layer) for m in model.modules())
        warnings = [] if quantized else [f"no layer of {job.source} was quantized: bitsandbytes found no linear layer"]
        model.save_pretrained(job.output)
        if (job.source / "tokenizer_config.json").is_file():
            AutoTokenizer.from_pretrained(job.source).save_pretrained(job.output)
        return {
            "files": sorted(p.name for p in job.output.iterdir()),
            "warnings": warnings,
            "quantized_layers": quantized,
            "quantization_config": model.config.quantization_config.to_dict(),
        }


@hookimpl
def register_quantizers(register):
    register(BnbQuantizer)
