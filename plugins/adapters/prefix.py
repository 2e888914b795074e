"""Prefix tuning: trained key/value vectors prepended to every attention layer (PEFT)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ftsdk import PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter


class PrefixConfig(PluginConfig):
    """Options of prefix tuning (see peft.PrefixTuningConfig).

    Every layer attends to ``num_virtual_tokens`` trained key/value pairs; the model is untouched, so one base
    serves many tasks. It suits generation tasks with modest data; it cannot be merged into the base and does
    not work with gradient checkpointing. Learning rate: high, 1e-2 (5e-3 to 3e-2).
    """

    num_virtual_tokens: int = Field(
        20, ge=1, le=1024, description="Trained key/value positions per layer: 10-20 for simple tasks, up to 100-200."
    )
    prefix_projection: bool = Field(
        False,
        description="Produce the prefix through a 2-layer MLP (Li & Liang's reparameterisation): more stable "
        "training, many more trained weights (only the resulting prefix is needed at inference).",
    )
    encoder_hidden_size: int | None = Field(
        None, ge=1, description="Hidden size of that MLP; None: the model's hidden size. Needs prefix_projection."
    )

    @model_validator(mode="after")
    def _hidden_size_needs_projection(self) -> PrefixConfig:
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("encoder_hidden_size sizes the prefix MLP: set prefix_projection: true, or remove it")
        return self


class PrefixAdapter(PeftAdapter):
    """Prefix tuning: the base stays untouched; each layer attends to trained virtual keys and values."""

    name = "prefix"
    summary = "Prefix tuning: trained key/value prefixes in every attention layer (PEFT)"
    Config = PrefixConfig
    peft_type = "PREFIX_TUNING"

    config: PrefixConfig

    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        return self.config.model_dump()


@hookimpl
def register_adapters(register):
    register(PrefixAdapter)
