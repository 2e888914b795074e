"""ftsdk-last-blocks: an ftsdk adapter that fine-tunes only the last N transformer blocks.

Partial fine-tuning: the embeddings and the first blocks stay frozen, the last ``blocks`` decoder
blocks (plus, by default, the final norm) are trained in full. It needs no extra library, the result
is a plain model folder (``AutoModelForCausalLM.from_pretrained`` loads it), and the backward pass
stops at the first trained block, so it is cheaper than full fine-tuning in time and optimizer memory.

Installed, it is found through the ``ftsdk`` entry-point group (see pyproject.toml)::

    Tuner("smollm2-135m", adapter="last-blocks", adapter_config={"blocks": 2})

Nothing heavy is imported here: torch is imported inside the methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ftsdk import Adapter, ConfigError, PluginConfig, hookimpl

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"

#: names of the list of decoder blocks (Llama, Qwen, Mistral, Phi: layers; GPT-2, Falcon, Bloom: h; MPT: blocks)
LAYER_LIST_NAMES = ("layers", "h", "blocks")
#: attribute names of the norm after the last block, looked up beside the block list
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm")


class LastBlocksConfig(PluginConfig):
    """Options of the last-blocks adapter."""

    blocks: int = Field(2, ge=1, description="How many of the last transformer blocks to train.")
    train_norm: bool = Field(True, description="Also train the final norm after the last block (recommended).")
    train_head: bool = Field(
        False,
        description=(
            "Also train the output head (lm_head). With tied embeddings (SmolLM2, many small models) the head IS "
            "the input embedding matrix, so this trains the embeddings too and the backward pass runs through "
            "every block: slower, more memory, and more forgetting."
        ),
    )


class LastBlocksAdapter(Adapter):
    """Freeze everything except the last N transformer blocks (and optionally the final norm and head)."""

    name = "last-blocks"
    summary = "Train only the last N transformer blocks (+ final norm); saves a full model"
    Config = LastBlocksConfig
    produces = "model"

    config: LastBlocksConfig

    def check(self, model: Any) -> None:
        """Refuse a ``blocks`` larger than the model's number of blocks, or parts the model lacks."""
        parent, layers = find_layers(model)
        if self.config.blocks > len(layers):
            raise ConfigError(
                f"adapter_config.blocks is {self.config.blocks} but {type(model).__name__} has only "
                f"{len(layers)} transformer blocks",
                hint=f"use a value from 1 to {len(layers)} (all {len(layers)} is full fine-tuning minus embeddings)",
            )
        if self.config.train_norm and find_final_norm(parent) is None:
            raise ConfigError(
                f"adapter_config.train_norm is true but no final norm ({', '.join(FINAL_NORM_NAMES)}) was found "
                f"beside the blocks of {type(model).__name__}",
                hint="set adapter_config.train_norm: false",
            )
        if self.config.train_head and model.get_output_embeddings() is None:
            raise ConfigError(
                f"adapter_config.train_head is true but {type(model).__name__} has no output head",
                hint="set adapter_config.train_head: false",
            )

    def wrap(self, model: Any) -> Any:
        """Set ``requires_grad`` on the trained parts only; the same model object is returned."""
        self.check(model)
        parent, layers = find_layers(model)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        trained: list[nn.Module] = list(layers[len(layers) - self.config.blocks :])
        if self.config.train_norm:
            trained.append(find_final_norm(parent))  # type: ignore[arg-type]  # check() made sure it exists
        if self.config.train_head:
            trained.append(model.get_output_embeddings())  # tied: the input embeddings are trained too
        for module in trained:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
        return model

    def save(self, model: Any, path: str) -> None:
        """Write the whole model (safetensors + config), loadable by ``AutoModelForCausalLM``."""
        model.save_pretrained(path)


def find_layers(model: Any) -> tuple[nn.Module, nn.ModuleList]:
    """The module holding the decoder blocks and the ``nn.ModuleList`` of blocks itself.

    A ModuleList named ``layers``, ``h`` or ``blocks``; where there are several (a vision tower and a
    language model), the one beside the input embeddings wins, else the first one found.
    """
    from torch import nn

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    found: list[tuple[nn.Module, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and name.rsplit(".", 1)[-1] in LAYER_LIST_NAMES:
            parent = model.get_submodule(name.rpartition(".")[0])
            if embeddings is not None and any(child is embeddings for child in parent.children()):
                return parent, module
            found.append((parent, module))
    if not found:
        raise ConfigError(
            f"cannot find the transformer blocks of {type(model).__name__}: no nn.ModuleList named "
            f"{', '.join(LAYER_LIST_NAMES)}",
            hint="the last-blocks adapter supports decoder models laid out like Llama or GPT-2; use adapter: lora",
        )
    return found[0]


def find_final_norm(parent: nn.Module) -> nn.Module | None:
    """The norm applied after the last block: a child of ``parent`` with a usual name, if any."""
    from torch import nn

    for name in FINAL_NORM_NAMES:
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


@hookimpl
def register_adapters(register):
    """Register the adapter with ftsdk (called by ftsdk's plugin manager)."""
    register(LastBlocksAdapter)
