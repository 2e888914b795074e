"""LoRA: train low-rank updates of chosen weight matrices, with PEFT."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk import PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter, resolve_targets

#: initialisations that move part of the base weights into the update: the saved adapter is converted
CONVERTED_INITS = ("pissa", "olora")
#: the attribute of a wrapped model that asks ftsdk.training.trainer.run_trainer for a LoRA+ optimizer
LORAPLUS_ATTRIBUTE = "ftsdk_loraplus_lr_ratio"


class LoraConfig(PluginConfig):
    """Options of a LoRA adapter (see peft.LoraConfig).

    Learning rate: 1e-4 to 5e-4 (2e-4 is a safe start); smaller ranks tolerate the upper end.
    """

    r: int = Field(16, ge=1, le=4096, description="Rank of the update. 8-16 for style or format, 32-64 for new skills.")
    alpha: float | None = Field(
        None, gt=0, description="Scaling numerator (update scaled by alpha/r). Default: 2 x r."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input; 0 for tiny data sets is fine.")
    target_modules: Literal["all-linear", "attention", "mlp", "attention+mlp"] | list[str] = Field(
        "all-linear", description='Layers to adapt: "all-linear" (recommended); "attention", "mlp" or '
        '"attention+mlp": those linear layers of each block, found in the model (Llama: q/k/v/o_proj; Phi-3: '
        'qkv_proj, o_proj); or names such as [q_proj, v_proj].'
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train as well.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r); helps at high ranks.")
    modules_to_save: list[str] | None = Field(
        None, description="Layers trained fully and saved beside the adapter (e.g. [lm_head] for new tokens)."
    )
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default", description="How the update starts (always as a zero change of the model's output): default: "
        "A random (Kaiming), B zero; gaussian: A Gaussian; pissa: A and B from the weight's top singular "
        "vectors (PiSSA, faster convergence); olora: from a QR decomposition (OLoRA). pissa and olora move the "
        "top part of each weight into the update; the saved adapter is converted to apply to the original base.",
    )
    pissa_niter: int | None = Field(
        None, ge=1, le=64, description="pissa: subspace iterations of a fast randomized SVD (4-16); None: exact SVD."
    )
    rank_pattern: dict[str, int] = Field(
        default_factory=dict, description="Per-module ranks overriding r: {pattern: rank}, the pattern a regex that "
        "must match the end of the module's name, e.g. {down_proj: 32, 'mlp\\..*': 16}.",
    )
    alpha_pattern: dict[str, float] = Field(
        default_factory=dict, description="Per-module alphas overriding alpha, keyed like rank_pattern."
    )
    layers_to_transform: list[int] | None = Field(
        None, description="Adapt only these block indices (e.g. the last ones); None: every block."
    )
    loraplus_lr_ratio: float | None = Field(
        None, gt=1, le=1024, description="LoRA+: train B with this multiple of the learning rate (16 is the "
        "paper's choice for LLMs); None: one learning rate.",
    )

    @model_validator(mode="after")
    def _names_not_empty(self) -> LoraConfig:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules must name at least one layer, or be \"all-linear\"")
        if self.pissa_niter is not None and self.init != "pissa":
            raise ValueError("pissa_niter needs init: pissa")
        if any(rank < 1 for rank in self.rank_pattern.values()):
            raise ValueError("rank_pattern ranks must be at least 1")
        if any(alpha <= 0 for alpha in self.alpha_pattern.values()):
            raise ValueError("alpha_pattern alphas must be above 0")
        if self.layers_to_transform is not None and (not self.layers_to_transform
                                                     or min(self.layers_to_transform) < 0):
            raise ValueError("layers_to_transform must list block indices (0 or more)")
        if self.layers_to_transform is not None and self.target_modules == "all-linear":
            raise ValueError("layers_to_transform needs target_modules as layer names, not \"all-linear\" (PEFT)")
        return self

    def init_lora_weights(self) -> bool | str:
        """PEFT's ``init_lora_weights`` for :attr:`init`."""
        if self.init == "default":
            return True
        if self.init == "pissa" and self.pissa_niter is not None:
            return f"pissa_niter_{self.pissa_niter}"
        return self.init

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
            "init_lora_weights": self.init_lora_weights(),
            "rank_pattern": self.rank_pattern,
            "alpha_pattern": self.alpha_pattern,
            "layers_to_transform": self.layers_to_transform,
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

    def check(self, model: Any) -> None:
        super().check(model)
        resolve_targets(model, self.config.target_modules)

    def wrap(self, model: Any) -> Any:
        wrapped = super().wrap(model)
        if self.config.init in CONVERTED_INITS:  # keep the initial adapter to convert the trained one against
            self._initial = tempfile.mkdtemp(prefix="ftsdk-lora-init-")
            peft_config = wrapped.peft_config["default"]
            peft_config.init_lora_weights = True  # as PEFT documents: saved as a plain LoRA start
            wrapped.save_pretrained(self._initial)
            peft_config.init_lora_weights = self.config.init_lora_weights()
        if self.config.loraplus_lr_ratio is not None:
            setattr(wrapped, LORAPLUS_ATTRIBUTE, self.config.loraplus_lr_ratio)  # read by ftsdk.training.trainer.run_trainer
        return wrapped

    def save(self, model: Any, path: str) -> None:
        initial = getattr(self, "_initial", None)
        if initial is None:
            model.save_pretrained(path)
            return
        # PiSSA/OLoRA changed the base weights: save the update relative to the original base (rank 2r)
        model.save_pretrained(path, path_initial_model_for_weight_conversion=initial)
        shutil.rmtree(initial, ignore_errors=True)
        self._initial = None

    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        return {**self.config.peft_kwargs(), "target_modules": resolve_targets(model, self.config.target_modules)}


@hookimpl
def register_adapters(register):
    register(LoraAdapter)
