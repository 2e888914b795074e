"""Prompt tuning: trained soft-prompt embeddings prepended to the input, optionally started from a text."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftsdk import ConfigError, PluginConfig, hookimpl
from ftsdk_plugins.adapters._peft import PeftAdapter


class PromptConfig(PluginConfig):
    """Options of prompt tuning (see peft.PromptTuningConfig).

    Only ``num_virtual_tokens`` input embeddings train (a few thousand weights). It approaches full fine-tuning
    on large models (10B+) but lags LoRA on small ones; choose it to store a task in a few kilobytes.
    Starting from a text describing the task beats a random start. Learning rate: very high, 3e-2
    (1e-2 to 3e-1).
    """

    num_virtual_tokens: int = Field(
        20, ge=1, le=1024, description="Soft-prompt length: 20 is a good start; up to 100 helps smaller models."
    )
    init_text: str | None = Field(
        None,
        min_length=1,
        description="Text whose token embeddings start the soft prompt (e.g. 'Name the color of the thing:'), "
        "repeated or cut to num_virtual_tokens; None starts from embeddings of random vocabulary tokens.",
    )


class PromptAdapter(PeftAdapter):
    """Prompt tuning: a trained soft prompt in front of every input; the base stays untouched."""

    name = "prompt"
    summary = "Prompt tuning: trained soft-prompt embeddings, initialised from a text (PEFT)"
    Config = PromptConfig
    peft_type = "PROMPT_TUNING"

    config: PromptConfig

    def check(self, model: Any) -> None:
        if self.config.init_text is not None and not model.name_or_path:
            raise ConfigError(
                "adapter_config.init_text needs the model's tokenizer, "
                "but the model does not say where it was loaded from",
                hint="load the model from a folder or hub id, or remove init_text",
            )

    def peft_kwargs(self, model: Any) -> dict[str, Any]:
        text = self.config.init_text
        options: dict[str, Any] = {
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "prompt_tuning_init": "SAMPLE_VOCAB" if text is None else "TEXT",
        }
        if text is not None:  # the model's own tokenizer turns the text into the starting embeddings
            options |= {"prompt_tuning_init_text": text, "tokenizer_name_or_path": model.name_or_path}
        return options


@hookimpl
def register_adapters(register):
    register(PromptAdapter)
