"""The typed interfaces every plugin implements, one per kind of work.

A plugin class declares its ``name``, a one-line ``summary``, a pydantic ``Config`` (its options,
with defaults, ranges and docs) and the import names of the packages it needs (``requires``).
Instances are built from a validated config: ``LoraAdapter({"r": 8})``.
Nothing here imports torch; heavy imports belong inside the methods.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ftsdk.validation import validate_config

if TYPE_CHECKING:
    from ftsdk.config import ModelSpec
    from ftsdk.device import Placement
    from ftsdk.models import ResolvedModel
    from ftsdk.training import TrainJob, TrainOutcome


class PluginConfig(BaseModel):
    """Base of every plugin's options: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Plugin(ABC):
    """What every plugin class declares."""

    kind: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    #: import names of the packages the plugin needs at run time (checked without importing)
    requires: ClassVar[tuple[str, ...]] = ()
    #: how to install what ``requires`` names, shown when something is missing
    install_hint: ClassVar[str | None] = None

    def __init__(self, config: PluginConfig | Mapping[str, Any] | None = None) -> None:
        self.config = validate_config(self.Config, config, where=f"{self.kind}_config")

    @classmethod
    def missing_requirements(cls) -> list[str]:
        """The packages in ``requires`` that cannot be imported here (found without importing them)."""
        return [pkg for pkg in cls.requires if importlib.util.find_spec(pkg) is None]


class Adapter(Plugin):
    """How parameters are trained: which weights change and how the model is wrapped."""

    kind: ClassVar[str] = "adapter"
    #: "adapter" when the output is a PEFT adapter folder, "model" when it is a full model
    produces: ClassVar[str] = "adapter"

    def load_model(self, resolved: ResolvedModel, spec: ModelSpec, placement: Placement) -> Any:
        """Load the base model; override to load differently (e.g. in 4 bits for QLoRA)."""
        from ftsdk.models import load_model

        return load_model(resolved, spec, placement)

    def check(self, model: Any) -> None:
        """Raise :class:`ftsdk.errors.ConfigError` if this config cannot apply to ``model``."""

    @abstractmethod
    def wrap(self, model: Any) -> Any:
        """Return the model made ready for training (e.g. ``peft.get_peft_model``)."""

    def save(self, model: Any, path: str) -> None:
        """Write what was trained to ``path`` in the format its consumer loads."""
        model.save_pretrained(path)


class Objective(Plugin):
    """What is optimised, on which shape of data."""

    kind: ClassVar[str] = "objective"
    #: the data format it trains on, a key of :data:`ftsdk.data.formats.FORMATS_OF_TASK`
    data_task: ClassVar[str] = "sft"

    @abstractmethod
    def train(self, job: TrainJob) -> TrainOutcome:
        """Train ``job.model`` on ``job.train_examples``; return metrics and the log history."""


class Quantizer(Plugin):
    """How a model is made smaller (GGUF, GPTQ, AWQ, bitsandbytes)."""

    kind: ClassVar[str] = "quantizer"

    @abstractmethod
    def quantize(self, source: str, output: str, calibration: list[str] | None = None) -> None:
        """Write a quantized copy of the model folder ``source`` to ``output``."""


class Merger(Plugin):
    """How several models (or adapters) become one."""

    kind: ClassVar[str] = "merger"

    @abstractmethod
    def merge(self, models: list[tuple[str, Mapping[str, Any]]], base: str | None, output: str) -> None:
        """Merge ``models`` (path and per-model parameters) onto ``base`` into ``output``."""


INTERFACE_OF_KIND: dict[str, type[Plugin]] = {
    "adapter": Adapter,
    "objective": Objective,
    "quantizer": Quantizer,
    "merger": Merger,
}
