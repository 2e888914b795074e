"""IA3: learned vectors that rescale the keys, values and feed-forward activations (PEFT)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ftsdk import ConfigError, PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter


class Ia3Config(PluginConfig):
    """Options of an IA3 adapter (see peft.IA3Config).

    IA3 trains one scaling vector per adapted layer: about 0.01% of the weights, 10-100x fewer than LoRA,
    so it suits small data sets and many cheap task adapters, but it learns less than LoRA. Its vectors
    start at 1 and need a high learning rate: 3e-3 (the T-Few recipe), 1e-3 to 1e-2.
    """

    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="Layers to rescale. None: PEFT's default for the architecture (Llama: k_proj, v_proj, down_proj), "
        "else the keys, values (or fused qkv) and feed-forward down projection found in the model (Phi-3: qkv_proj, "
        "down_proj).",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Which of target_modules are feed-forward layers (their input is rescaled, not their output). "
        "None: those of target_modules that PEFT's default lists as feed-forward (Llama: down_proj).",
    )

    @model_validator(mode="after")
    def _feedforward_within_targets(self) -> Ia3Config:
        if self.feedforward_modules and self.target_modules is not None:
            outside = sorted(set(self.feedforward_modules) - set(self.target_modules))
            if outside:
                raise ValueError(f"feedforward_modules must be among target_modules; not there: {', '.join(outside)}")
        return self


class Ia3Adapter(PeftAdapter):
    """Infused adapter by inhibiting and amplifying inner activations: the fewest trained weights."""

    name = "ia3"
    summary = "IA3: trained scaling vectors on keys, values and feed-forward layers (PEFT)"
    Config = Ia3Config
    peft_type = "IA3"

    config: Ia3Config

    def module_options(self) -> dict[str, Any]:
        return {"target_modules": self.config.target_modules, "feedforward_modules": self.config.feedforward_modules}

    def check(self, model: Any) -> None:
        super().check(model)
        if self.config.target_modules is None and not _defaults(model)[0]:
            from ftsdk.models.modules import linear_module_names

            raise ConfigError(
                f"PEFT has no default IA3 layers for model type '{model.config.model_type}'",
                hint="set adapter_config.target_modules (and feedforward_modules) from its linear layers: "
                + ", ".join(linear_module_names(model)),
            )

    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        targets, feedforward = _defaults(model)
        if self.config.target_modules is not None:
            targets = self.config.target_modules
            feedforward = [name for name in targets if name in feedforward]
        if self.config.feedforward_modules is not None:
            feedforward = self.config.feedforward_modules
        return {"target_modules": targets, "feedforward_modules": feedforward}


def _defaults(model: Any) -> tuple[list[str], list[str]]:
    """IA3 target and feed-forward layers: PEFT's default for the model type, else found in the model's own
    blocks (keys and values, fused qkv where they are fused as in Phi-3, and the feed-forward down projection);
    empty when neither knows."""
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    )

    from ftsdk_plugins.adapters._peft import layer_groups

    model_type = model.config.model_type
    if model_type in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
        return (
            list(TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[model_type]),
            list(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type, [])),
        )
    groups = layer_groups(model)
    keys_values = [n for n in groups["attention"] if n in ("k_proj", "v_proj")] or [
        n for n in groups["attention"] if "qkv" in n or "query_key_value" in n]
    down = [n for n in groups["mlp"] if "down" in n or n in ("fc2", "c_proj", "dense_4h_to_h", "w2")]
    if not keys_values or not down:
        return [], []
    return keys_values + down, down


@hookimpl
def register_adapters(register):
    register(Ia3Adapter)
