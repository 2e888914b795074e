"""LoRA: train low-rank updates of chosen weight matrices, with PEFT."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ftsdk import Adapter, ConfigError, PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter, resolve_targets

if TYPE_CHECKING:
    from ftsdk.plugin.jobs import TrainJob
    from ftsdk.plugin.kinds import Objective
    from ftsdk.training.recipe import TrainingConfig

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
    init: Literal["default", "gaussian", "pissa", "olora", "loftq", "eva"] = Field(
        "default", description="How the update starts (always as a zero change of the model's output): default: "
        "A random (Kaiming), B zero; gaussian: A Gaussian; pissa: A and B from the weight's top singular "
        "vectors (PiSSA, faster convergence); olora: from a QR decomposition (OLoRA). pissa and olora move the "
        "top part of each weight into the update; the saved adapter is converted to apply to the original base. "
        "loftq: quantize each base weight (loftq_bits) and start A and B from the SVD of the quantization error "
        "(LoftQ; PEFT computes it on CUDA/XPU only); the adapter then belongs to the quantized base. eva: A from "
        "the principal directions of each layer's inputs on eva_batches batches of the training data, ranks "
        "redistributed by explained variance (EVA), B zero.",
    )
    loftq_bits: Literal[4, 8] = Field(4, description="loftq: bits of the quantized base, 4 (NF4) or 8 (LLM.int8).")
    loftq_iter: int = Field(1, ge=1, le=16, description="loftq: alternating quantize/SVD steps (1-5).")
    eva_rho: float = Field(2.0, ge=1, le=16, description="eva: a layer may take up to rho x r ranks (1: no "
                           "redistribution; 2 is EVA's default).")
    eva_tau: float = Field(0.99, ge=0, le=1, description="eva: stop the incremental SVD once consecutive "
                           "components agree to this cosine similarity.")
    eva_batches: int = Field(8, ge=1, le=1024, description="eva: at most this many training batches feed the SVD.")
    eva_batch_size: int = Field(4, ge=1, le=512, description="eva: examples per SVD batch (whole conversations, "
                                "padding ignored).")
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
        for prefix in ("loftq", "eva"):
            # values, not fields set: a saved config (Tuner.load) restates every default
            given = sorted(n for n, field in type(self).model_fields.items()
                           if n.startswith(prefix + "_") and getattr(self, n) != field.default)
            if given and self.init != prefix:
                raise ValueError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} init: {prefix}")
        if self.init == "loftq" and (self.use_rslora or self.alpha_pattern
                                     or (self.alpha is not None and self.alpha != self.r)):
            raise ValueError("init: loftq starts from base + B A at scale 1 (PEFT): leave alpha unset (it is then r) "
                             "and use_rslora and alpha_pattern off")
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
            "lora_alpha": self.alpha if self.alpha is not None else self.r if self.init == "loftq" else 2 * self.r,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "bias": self.bias,
            "use_rslora": self.use_rslora,
            "modules_to_save": self.modules_to_save,
            "init_lora_weights": self.init_lora_weights(),
            "rank_pattern": self.rank_pattern,
            "alpha_pattern": self.alpha_pattern,
            "layers_to_transform": self.layers_to_transform,
            **self.init_options(),
        }

    def init_options(self) -> dict[str, Any]:
        """PEFT's ``loftq_config`` / ``eva_config`` for :attr:`init` (none for the other inits)."""
        import peft

        if self.init == "loftq":
            return {"loftq_config": peft.LoftQConfig(loftq_bits=self.loftq_bits, loftq_iter=self.loftq_iter)}
        if self.init == "eva":  # padding is left out by the attention mask; every token of the data counts
            return {"eva_config": peft.EvaConfig(rho=self.eva_rho, tau=self.eva_tau, use_label_mask=False)}
        return {}


class LoraAdapter(PeftAdapter):
    """Low-rank adaptation: the standard, cheap way to fine-tune."""

    name = "lora"
    summary = "LoRA: low-rank updates of the linear layers (PEFT)"
    Config = LoraConfig
    peft_type = "LORA"

    config: LoraConfig

    def module_options(self) -> dict[str, Any]:
        return {"target_modules": self.config.target_modules, "modules_to_save": self.config.modules_to_save}

    def check_training(self, training: TrainingConfig, objective: Objective) -> None:
        super().check_training(training, objective)
        if self.config.init == "loftq":
            check_loftq(self)
        if self.config.init == "eva" and objective.data_task != "sft":
            raise ConfigError(f"adapter_config.init: eva reads conversations; objective '{objective.name}' trains "
                              f"on {objective.data_task} data", hint="use init: pissa or default for this objective")

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

    def initialize(self, model: Any, job: TrainJob) -> None:
        """EVA: set A from the SVD of each adapted layer's inputs on the first training batches (PEFT)."""
        if self.config.init != "eva":
            return
        if job.distributed is not None and job.distributed.strategy != "ddp":
            raise ConfigError(f"adapter_config.init: eva with distributed.strategy {job.distributed.strategy}: EVA "
                              "replaces the LoRA matrices (new ranks) after the model is sharded",
                              hint="use distributed.strategy: ddp, or init: pissa")
        import peft

        batches = eva_batches(job.tokenizer, job.train_examples, self.config.eva_batches, self.config.eva_batch_size,
                              job.training.max_length, next(model.parameters()).device)
        was_training = model.training
        model.eval()
        peft.initialize_lora_eva_weights(model, dataloader=batches, show_progress_bar=False)
        model.train(was_training)

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


def eva_batches(tokenizer: Any, conversations: list[Any], batches: int, batch_size: int, max_length: int,
                device: Any) -> list[dict[str, Any]]:
    """The first ``batches`` batches of ``conversations`` as padded token tensors for EVA's SVD (the loader gave the
    tokenizer a pad token; the attention mask keeps padding out of the SVD)."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations[:batches * batch_size]]
    return [dict(tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                           add_special_tokens=False, return_tensors="pt").to(device))
            for i in range(0, len(texts), batch_size)]


def check_loftq(adapter: LoraAdapter) -> None:
    """Refuse LoftQ where PEFT cannot compute it or its output cannot be reloaded (before any model loads)."""
    import torch

    if type(adapter).load_options is not Adapter.load_options:
        raise ConfigError(f"adapter_config.init: loftq with adapter '{adapter.name}': LoftQ quantizes the base itself "
                          "and starts LoRA from the quantization error; this adapter loads the base quantized "
                          "already, so the two quantizations would disagree", hint="use adapter: lora with init: loftq")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("adapter_config.init: loftq needs bitsandbytes", hint="pip install 'ftsdk[bnb]'")
    if not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())):
        raise ConfigError("adapter_config.init: loftq: PEFT computes LoftQ on a CUDA or XPU device only, and this "
                          "machine has neither", hint="run on a GPU, or use init: pissa (also SVD-based, on CPU)")


@hookimpl
def register_adapters(register):
    register(LoraAdapter)
