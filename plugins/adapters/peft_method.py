"""The generic ``peft`` adapter: any PEFT method (LoHa, LoKr, OFT, BOFT, VeRA, FourierFT...) by its type name."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from ftsdk import PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter

#: methods PEFT lists that ftsdk's training loop cannot drive, and why
UNSUPPORTED = {
    "ADALORA": "AdaLoRA reallocates its ranks through update_and_allocate() after every optimizer step, which "
    "ftsdk's training loop does not call; use method LORA or adapter: lora",
}


def config_classes() -> dict[str, type]:
    """PEFT's config class of every method, by its type name (``peft.PEFT_TYPE_TO_CONFIG_MAPPING``)."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(key, "value", key)): value for key, value in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


class PeftMethodConfig(PluginConfig):
    """Options of the generic PEFT adapter: a method's type name and its own config options.

    Learning rates follow the method: LoHa, LoKr, OFT, BOFT and other LoRA-like methods as LoRA (1e-4 to 5e-4,
    LoKr/LoHa up to 1e-3); methods with very few trained weights (VeRA, FourierFT, IA3-like scalings) need
    1e-3 to 1e-2. ``task_type`` is set from the objective's model head unless the options give it.
    """

    method: str = Field(
        min_length=1,
        description="PEFT method type name, case-insensitive: LOHA, LOKR, OFT, BOFT, VERA, FOURIERFT, "
        "HRA, VBLORA, LN_TUNING... (the keys of peft.PEFT_TYPE_TO_CONFIG_MAPPING).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of that method's PEFT config class, e.g. for LOHA {r: 8, alpha: 16, "
        "target_modules: [q_proj, v_proj]}; see the PEFT documentation of the class.",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        method = value.strip().upper().replace("-", "_")
        known = config_classes()
        if method not in known:
            close = difflib.get_close_matches(method, list(known), n=1, cutoff=0.5)
            guess = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown PEFT method '{value}'{guess} Available: {', '.join(sorted(known))}")
        if method in UNSUPPORTED:
            raise ValueError(UNSUPPORTED[method])
        return method

    @field_validator("options")
    @classmethod
    def _options_fit_method(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if method is None:  # the method itself was invalid: reported there
            return value
        config_class = config_classes()[method]
        try:
            config_class(**{"task_type": "CAUSAL_LM", **value})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{config_class.__name__} rejects them: {exc}") from None
        return value


class PeftMethodAdapter(PeftAdapter):
    """Any method of PEFT's catalogue, configured with that method's own options."""

    name = "peft"
    summary = "Any PEFT method by type name (LoHa, LoKr, OFT, BOFT, VeRA, FourierFT, ...) with its options"
    Config = PeftMethodConfig

    config: PeftMethodConfig

    def method(self) -> str:
        return self.config.method

    def module_options(self) -> dict[str, Any]:
        options = self.config.options
        return {f"options.{key}": options.get(key) for key in ("target_modules", "modules_to_save")}

    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        return dict(self.config.options)


@hookimpl
def register_adapters(register):
    register(PeftMethodAdapter)
