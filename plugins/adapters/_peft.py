"""The shared base of the adapters built with ``peft.get_peft_model``: LoRA, DoRA, QLoRA, IA3, prefix, prompt, peft."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from ftsdk import Adapter, ConfigError
from ftsdk.modules import check_module_names

if TYPE_CHECKING:
    from ftsdk.config import TrainingConfig
    from ftsdk.kinds import Objective

#: PEFT methods whose trained key/values live in the attention cache: gradient checkpointing breaks them
#: (transformers 5 recomputes the blocks without the prefix: a shape-mismatch RuntimeError mid-step)
CACHE_METHODS = frozenset({"PREFIX_TUNING", "CARTRIDGE"})


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
        import peft

        return peft.get_peft_model(model, self.peft_config(model))
