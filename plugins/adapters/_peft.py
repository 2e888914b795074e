"""The shared base of the adapters built with ``peft.get_peft_model``: LoRA, DoRA, QLoRA, IA3, prefix, prompt, peft."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from ftsdk import Adapter, ConfigError
from ftsdk.models.modules import check_module_names

if TYPE_CHECKING:
    from ftsdk.plugin.kinds import Objective
    from ftsdk.training.recipe import TrainingConfig

#: PEFT methods whose trained key/values live in the attention cache: gradient checkpointing breaks them
#: (transformers 5 recomputes the blocks without the prefix: a shape-mismatch RuntimeError mid-step)
CACHE_METHODS = frozenset({"PREFIX_TUNING", "CARTRIDGE"})


#: parent-module names that hold a decoder block's attention / feed-forward projections, across architectures
#: (Llama/Qwen/Gemma/Mistral/Phi-3: self_attn and mlp; GPT-2: attn and mlp; Falcon/BLOOM: self_attention)
BLOCK_PARTS = {"attention": ("self_attn", "attn", "attention", "self_attention"),
               "mlp": ("mlp", "feed_forward", "ffn")}


def layer_groups(model: Any) -> dict[str, list[str]]:
    """Short names of the linear layers in each part of the decoder blocks, read from the model's own modules.

    ``{"attention": ["k_proj", "o_proj", "q_proj", "v_proj"], "mlp": [...]}`` for Llama;
    ``{"attention": ["o_proj", "qkv_proj"], "mlp": ["down_proj", "gate_up_proj"]}`` for Phi-3's fused layers.
    """
    import torch

    groups: dict[str, set[str]] = {part: set() for part in BLOCK_PARTS}
    for full, module in model.named_modules():
        if not (isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")):
            continue
        path = full.split(".")
        for part, parents in BLOCK_PARTS.items():
            if len(path) >= 2 and path[-2] in parents:
                groups[part].add(path[-1])
    return {part: sorted(names) for part, names in groups.items()}


def resolve_targets(model: Any, targets: str | list[str]) -> str | list[str]:
    """``target_modules`` for PEFT: a list as given, ``all-linear`` as PEFT resolves it, ``attention`` / ``mlp``
    / ``attention+mlp`` as the names of those linear layers in this model (:func:`layer_groups`)."""
    if isinstance(targets, list) or targets == "all-linear":
        return targets
    groups = layer_groups(model)
    names = sorted({name for part in targets.split("+") for name in groups[part]})
    if not names:
        from ftsdk.models.modules import linear_module_names

        raise ConfigError(f"target_modules {targets!r}: {type(model).__name__} has no linear layer under a module "
                          f"named {' or '.join(p for part in targets.split('+') for p in BLOCK_PARTS[part])}",
                          hint="name the layers: " + ", ".join(linear_module_names(model)))
    return names


def task_type(model: Any) -> str:
    """PEFT's task type for ``model``: sequence classification (its score head is then trained too) or causal LM."""
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


class PeftAdapter(Adapter):
    """An adapter that is one PEFT method: subclasses say which (``peft_type``) and give its options."""

    requires: ClassVar[tuple[str, ...]] = ("peft",)
    heads: ClassVar[tuple[str, ...]] = ("causal_lm", "sequence_classification")
    #: the PEFT method, a key of ``peft.PEFT_TYPE_TO_CONFIG_MAPPING`` (LORA, IA3, PREFIX_TUNING...)
    peft_type: ClassVar[str]

    def method(self) -> str:
        """The PEFT method this instance trains."""
        return self.peft_type

    @abstractmethod
    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        """Keyword arguments of the method's PEFT config class for ``model`` (``task_type`` is added)."""

    def module_options(self) -> dict[str, Any]:
        """Options that name modules of the model, by option name; the lists among them are checked."""
        return {}

    def check_training(self, training: TrainingConfig, objective: Objective) -> None:
        if training.gradient_checkpointing and self.method() in CACHE_METHODS:
            raise ConfigError(
                f"adapter '{self.name}' ({self.method()}) cannot train with training.gradient_checkpointing: "
                "its trained key/values live in the attention cache, which checkpointing drops when it "
                "recomputes the blocks (a shape mismatch in transformers 5)",
                hint="set training.gradient_checkpointing: false (lower batch_size or max_length to save memory), "
                "or use adapter: prompt or lora",
            )

    def check(self, model: Any) -> None:
        for option, names in self.module_options().items():
            if isinstance(names, list):
                check_module_names(model, names, f"adapter_config.{option}")

    def peft_config(self, model: Any) -> Any:
        """The PEFT config object for ``model``."""
        import peft

        config_class = peft.PEFT_TYPE_TO_CONFIG_MAPPING[self.method()]
        return config_class(**{"task_type": task_type(model), **self.peft_kwargs(model)})

    def wrap(self, model: Any) -> Any:
        from ftsdk.models.peft_wrapping import wrap

        return wrap(model, self.peft_config(model))
