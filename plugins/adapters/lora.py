"""LoRA: train low-rank updates of chosen weight matrices, with PEFT."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk import Adapter, PluginConfig, hookimpl
from ftsdk.modules import check_module_names


class LoraConfig(PluginConfig):
    """Options of a LoRA adapter (see peft.LoraConfig)."""

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
        """Keyword arguments for ``peft.LoraConfig``."""
        return {
            "r": self.r,
            "lora_alpha": self.alpha if self.alpha is not None else 2 * self.r,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "bias": self.bias,
            "use_rslora": self.use_rslora,
            "modules_to_save": self.modules_to_save,
            "task_type": "CAUSAL_LM",
        }


class LoraAdapter(Adapter):
    """Low-rank adaptation: the standard, cheap way to fine-tune."""

    name = "lora"
    summary = "LoRA: low-rank updates of the linear layers (PEFT)"
    Config = LoraConfig
    requires = ("peft",)

    config: LoraConfig

    def check(self, model: Any) -> None:
        if isinstance(self.config.target_modules, list):
            check_module_names(model, self.config.target_modules, "adapter_config.target_modules")
        if self.config.modules_to_save:
            check_module_names(model, self.config.modules_to_save, "adapter_config.modules_to_save")

    def peft_config(self) -> Any:
        import peft

        return peft.LoraConfig(**self.config.peft_kwargs())

    def wrap(self, model: Any) -> Any:
        import peft

        return peft.get_peft_model(model, self.peft_config())


@hookimpl
def register_adapters(register):
    register(LoraAdapter)
