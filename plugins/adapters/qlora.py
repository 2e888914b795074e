"""QLoRA: LoRA on a base model loaded in 4 bits (NF4/FP4) or 8 bits with bitsandbytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ftsdk import hookimpl
from ftsdk_plugins.adapters.lora import LoraAdapter, LoraConfig

if TYPE_CHECKING:
    from ftsdk.models.device import Placement

#: options that only 4-bit loading reads
FOUR_BIT_OPTIONS = ("quant_type", "double_quant", "compute_dtype")
#: per model head, the new layers that must stay unquantized (they are trained in full and saved)
TRAINED_HEAD_MODULES = {"sequence_classification": ["score", "classifier"]}
#: bitsandbytes' 4-bit block size: one absmax constant per this many weights
BLOCK = 64
#: with double quantization the absmax constants are 8-bit, with one fp32 constant per this many blocks
DOUBLE_QUANT_BLOCK = 256


class QloraConfig(LoraConfig):
    """Options of a QLoRA adapter: LoRA's options plus how the frozen base is quantized (bitsandbytes).

    The base weights stay quantized and frozen; only the LoRA matrices train, so a 7B model fine-tunes in
    ~6 GB of GPU memory. Learning rate: as LoRA, 2e-4 (the QLoRA paper: 2e-4 up to 13B
    parameters, 1e-4 for larger models); target all linear layers, which QLoRA needs to match full precision.
    """

    bits: Literal[4, 8] = Field(
        4,
        description="4: NF4/FP4 weights, ~0.52 byte per weight (QLoRA proper); "
        "8: LLM.int8, ~1 byte, closer to the original.",
    )
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4",
        description="4-bit data type: nf4 (normal float, suited to normally distributed weights; "
        "the QLoRA default) or fp4.",
    )
    double_quant: bool = Field(
        True, description="Quantize the quantization constants too: saves ~0.37 bit per weight (~3 GB on a 65B model)."
    )
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="dtype of the matmuls on dequantized 4-bit weights; "
        "auto: the model's dtype (bfloat16 on recent GPUs).",
    )

    @model_validator(mode="after")
    def _four_bit_options_need_four_bits(self) -> QloraConfig:
        given = [name for name in FOUR_BIT_OPTIONS if name in self.model_fields_set]
        if self.bits == 8 and given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to 4-bit loading only; "
                             "remove it or set bits: 4")
        return self


class QloraAdapter(LoraAdapter):
    """LoRA on a frozen base quantized to 4 or 8 bits while it loads."""

    name = "qlora"
    summary = "QLoRA: LoRA on a 4-bit (NF4/FP4) or 8-bit base model (bitsandbytes)"
    Config = QloraConfig
    requires = ("bitsandbytes", "peft")
    install_hint = "pip install 'ftsdk[bnb]'"

    config: QloraConfig

    def quantization_config(self, placement: Placement, head: str = "causal_lm") -> Any:
        """The ``transformers.BitsAndBytesConfig`` the base loads with, for a model with ``head``."""
        import torch
        from transformers import BitsAndBytesConfig

        skip = TRAINED_HEAD_MODULES.get(head)
        if self.config.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        compute = self.config.compute_dtype
        return BitsAndBytesConfig(
            load_in_4bit=True,
            llm_int8_skip_modules=skip,
            bnb_4bit_quant_type=self.config.quant_type,
            bnb_4bit_use_double_quant=self.config.double_quant,
            bnb_4bit_compute_dtype=placement.dtype if compute == "auto" else getattr(torch, compute),
        )

    def load_options(self, placement: Placement, head: str) -> dict[str, Any]:
        """Load the base quantized, straight onto the placement's device (bitsandbytes' kernels for it)."""
        return {"quantization_config": self.quantization_config(placement, head), "device_map": {"": placement.device}}

    def wrap(self, model: Any) -> Any:
        """Freeze the base, upcast its unquantized weights (norms, embeddings) to float32, add LoRA."""
        import peft

        # checkpointing is training.gradient_checkpointing's business (the Trainer turns it on)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().wrap(model)

    def weight_bytes(self, model: Any, placement: Placement) -> int:
        """Quantized linear layers (not the output or score head) at ``bits`` plus constants; the rest in float32."""
        import torch

        if self.config.bits == 8:
            bits_per_weight = 8.0
        elif self.config.double_quant:
            bits_per_weight = 4 + 8 / BLOCK + 32 / (BLOCK * DOUBLE_QUANT_BLOCK)
        else:
            bits_per_weight = 4 + 32 / BLOCK
        head = model.get_output_embeddings()
        kept = {name for names in TRAINED_HEAD_MODULES.values() for name in names}
        quantized = {
            id(module.weight)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head and name.rsplit(".", 1)[-1] not in kept
        }
        total = 0.0
        for parameter in model.parameters():
            if id(parameter) in quantized:
                total += parameter.numel() * bits_per_weight / 8
            else:  # prepare_model_for_kbit_training upcasts every unquantized 16-bit weight
                total += parameter.numel() * max(parameter.element_size(), 4)
        return int(total)


@hookimpl
def register_adapters(register):
    register(QloraAdapter)
