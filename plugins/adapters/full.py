"""Full fine-tuning: every weight trains (optionally not the embeddings or the first blocks); saves a whole model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from ftsdk import Adapter, ConfigError, PluginConfig, hookimpl

if TYPE_CHECKING:
    from torch import nn


class FullConfig(PluginConfig):
    """Options of full fine-tuning.

    Every weight trains: the most capacity and the most memory (weights, gradients and two AdamW states:
    ~16 bytes per parameter in float32), and the most forgetting. Choose it for large data sets or deep
    changes, on small models. Learning rate: low, 1e-5 to 5e-5 (10x below LoRA's).
    """

    freeze_embeddings: bool = Field(
        False,
        description="Keep the input embeddings frozen (with tied embeddings, as in SmolLM2, the output head too): "
        "saves their gradients and optimizer states, which are large for big vocabularies.",
    )
    freeze_blocks: int = Field(
        0, ge=0, description="Keep the first N transformer blocks frozen; the backward pass then stops at block N."
    )


class FullAdapter(Adapter):
    """Train all the weights (minus what is frozen) without PEFT; the result is a complete model folder."""

    name = "full"
    summary = "Full fine-tuning: all weights train, optional frozen embeddings / first blocks; saves a model"
    Config = FullConfig
    produces = "model"
    heads: ClassVar[tuple[str, ...]] = ("causal_lm", "sequence_classification")

    config: FullConfig

    def check(self, model: Any) -> None:
        if self.config.freeze_blocks and self.config.freeze_blocks >= len(blocks := decoder_blocks(model)):
            raise ConfigError(
                f"adapter_config.freeze_blocks is {self.config.freeze_blocks} but {type(model).__name__} has "
                f"{len(blocks)} transformer blocks: nothing would train but the final norm and head",
                hint=f"use a value from 0 to {len(blocks) - 1}",
            )

    def wrap(self, model: Any) -> Any:
        """Set ``requires_grad``: everything, minus the frozen parts. The same model object is returned."""
        model.requires_grad_(True)
        blocks = self.config.freeze_blocks
        frozen: list[nn.Module] = list(decoder_blocks(model)[:blocks]) if blocks else []
        if self.config.freeze_embeddings:
            frozen.append(model.get_input_embeddings())
        for module in frozen:
            module.requires_grad_(False)
        return model


def decoder_blocks(model: Any) -> nn.ModuleList:
    """The transformer blocks: the one ``nn.ModuleList`` beside the input embeddings (Llama ``layers``, GPT-2 ``h``)."""
    from torch import nn

    embeddings = model.get_input_embeddings()
    for module in model.modules():
        children = list(module.children())
        if any(child is embeddings for child in children):
            lists = [child for child in children if isinstance(child, nn.ModuleList)]
            if len(lists) == 1:
                return lists[0]
    raise ConfigError(
        f"cannot find the transformer blocks of {type(model).__name__} (an nn.ModuleList beside its embeddings)",
        hint="set adapter_config.freeze_blocks: 0, or use adapter: lora",
    )


@hookimpl
def register_adapters(register):
    register(FullAdapter)
