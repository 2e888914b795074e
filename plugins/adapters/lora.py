"""LoRA: train low-rank updates of chosen weight matrices, with PEFT."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk import PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter


class LoraConfig(PluginConfig):
    """Options of a LoRA adapter (see peft.LoraConfig).

    Learning rate: 1e-4 to 5e-4 (2e-4 is a safe start); smaller ranks tolerate the upper end.
    """

    r: int = Field(16, ge=1, le=4096, description="Rank of the update. 8-16 for style or format, 32-64 for new skills.")
    alpha: float | None = Field(
        None, gt=0, description="Scaling numerator (update scaled by alpha/r). Default: 2 x r."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input; 0 for tiny data sets is fine.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description='Layers to adapt: "all-linear" (recommended) or names such as [q_proj, v_proj].'
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train as well.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r); helps at high ranks.")
    modules_to_save: list[str] | None = Field(
        None, description="Layers trained fully and saved beside the adapter (e.g. [lm_head] for new tokens)."
    )

    @model_validator(mode="after")
    def _names_not_empty(self) -> LoraConfig:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules must name at least one layer, or be \"all-linear\"")
        return self

    def peft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``peft.LoraConfig`` (its ``task_type`` follows the model)."""
        return {
            "r": self.r,
            "lora_alpha": self.alpha if self.alpha is not None else 2 * self.r,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "bias": self.bias,
            "use_rslora": self.use_rslora,
            "modules_to_save": self.modules_to_save,
        }


class LoraAdapter(PeftAdapter):
    """Low-rank adaptation: the standard, cheap way to fine-tune."""

    name = "lora"
    summary = "LoRA: low-rank updates of the linear layers (PEFT)"
    Config = LoraConfig
    peft_type = "LORA"

    config: LoraConfig

    def module_options(self) -> dict[str, Any]:
        return {"target_modules": self.config.target_modules, "modules_to_save": self.config.modules_to_save}

    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        return self.config.peft_kwargs()


@hookimpl
def register_adapters(register):
    register(LoraAdapter)
