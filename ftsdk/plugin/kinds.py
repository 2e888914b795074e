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
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ftsdk.plugin.settings import StrictModel, validate_config

if TYPE_CHECKING:
    from ftsdk.models.device import Placement
    from ftsdk.plugin.jobs import LaunchRequest, MergeRequest, QuantizeJob, TrainJob, TrainOutcome
    from ftsdk.training.recipe import TrainingConfig


class PluginConfig(StrictModel):
    """Base of every plugin's options: unknown keys are errors, assignments are validated, numbers are strict."""


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
    #: the model heads (keys of :data:`ftsdk.models.loading.HEADS`) it can wrap, train and save
    heads: ClassVar[tuple[str, ...]] = ("causal_lm",)

    def load_options(self, placement: Placement, head: str) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments for the base the core loads with the objective's ``head``.

        Override to load differently: QLoRA returns a 4-bit ``quantization_config`` and a ``device_map``.
        """
        return {}

    def weight_bytes(self, model: Any, placement: Placement) -> int:
        """Bytes the base weights take once loaded with :meth:`load_options` (``ftsdk estimate`` asks).

        ``model`` is built on the meta device at ``placement.dtype``; override when loading changes precision.
        """
        return sum(p.numel() * p.element_size() for p in model.parameters())

    def check_training(self, training: TrainingConfig, objective: Objective) -> None:
        """Raise :class:`ftsdk.plugin.errors.ConfigError` if this adapter cannot train with these settings.

        Called before any model loads, so incompatible combinations fail in a second.
        """

    def check(self, model: Any) -> None:
        """Raise :class:`ftsdk.plugin.errors.ConfigError` if this config cannot apply to ``model``."""

    @abstractmethod
    def wrap(self, model: Any) -> Any:
        """Return the model made ready for training (e.g. ``peft.get_peft_model``)."""

    def initialize(self, model: Any, job: TrainJob) -> None:
        """Finish initialising the wrapped ``model`` from ``job``'s training data (e.g. LoRA's EVA init).

        Called once by the core after :meth:`wrap` and before the objective trains; the default does nothing.
        """

    def save(self, model: Any, path: str) -> None:
        """Write what was trained to ``path`` in the format its consumer loads."""
        model.save_pretrained(path)


class Objective(Plugin):
    """What is optimised, on which shape of data."""

    kind: ClassVar[str] = "objective"
    #: the data it trains on, a key of :data:`ftsdk.data.formats.FORMATS_OF_TASK`
    data_task: ClassVar[str] = "sft"
    #: the model head it trains, a key of :data:`ftsdk.models.loading.HEADS`
    model_head: ClassVar[str] = "causal_lm"

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        """Raise :class:`ftsdk.plugin.errors.ConfigError` if this objective cannot train with these settings or adapter.

        Called before any model loads, after the adapter's own ``check_training``.
        """

    def prepare_model(self, model: Any) -> Any:
        """Adjust the freshly loaded base model before the adapter wraps it (e.g. a one-output score head)."""
        return model

    @abstractmethod
    def train(self, job: TrainJob) -> TrainOutcome:
        """Train ``job.model`` on ``job.train_examples``; return metrics and the log history."""


class Quantizer(Plugin):
    """How a model is made smaller (GGUF, GPTQ, AWQ, bitsandbytes).

    The core (:func:`ftsdk.quantizing.run.quantize`) resolves the source, calls :meth:`check` before any
    heavy work, gathers calibration texts when :attr:`uses_calibration`, and hands :meth:`quantize` an
    empty temporary folder that becomes the output, with its ``ftsdk.json``, only once complete.
    """

    kind: ClassVar[str] = "quantizer"
    #: what the output folder holds: "model" (a transformers folder) or "gguf" (one ``.gguf`` file)
    produces: ClassVar[str] = "model"
    #: the sources it takes: "model" (a transformers folder) and/or "adapter" (a PEFT adapter folder)
    accepts: ClassVar[tuple[str, ...]] = ("model",)
    #: whether :meth:`quantize` needs calibration texts (``QuantizeJob.calibration``)
    uses_calibration: ClassVar[bool] = False

    def check(self, source: Path, source_kind: str) -> None:
        """Raise :class:`ftsdk.plugin.errors.ConfigError` if this config cannot quantize ``source``.

        Cheap: read ``config.json`` (or ``adapter_config.json``), never the weights.
        """

    @abstractmethod
    def quantize(self, job: QuantizeJob) -> dict[str, Any]:
        """Write the quantized model into the empty ``job.output``; return facts for the manifest.

        The facts include ``files`` (the written file names) and ``warnings`` (strings the user must see,
        e.g. tensors a backend left unquantized), and may include ``quality``: a flat mapping of figures
        measured of the output (e.g. ``perplexity_ratio`` against the source), which ``ftsdk quantize`` prints
        and the manifest keeps under ``quality``; other facts are kept under ``facts``.
        """


class PreparedMerge(Protocol):
    """A merge whose inputs and options are checked: running it is the only work left."""

    #: what the output folder holds: "model" or "adapter"
    produces: str

    def run(self, folder: Path) -> dict[str, Any]:
        """Write the merged weights, config and tokenizer into the empty ``folder``; return manifest facts.

        The facts include ``inputs``: one entry per input with its path, options and content hash.
        """
        ...


class Merger(Plugin):
    """How several models (or adapters) become one.

    ``Config`` holds the method's own options (``normalize``, ``lambda``, ``t``...); ``InputParams``
    the options each input takes (``weight``, ``density``...), given per model or as defaults under the
    config's ``parameters``. A per-input option whose default is None must be given.
    """

    kind: ClassVar[str] = "merger"
    InputParams: ClassVar[type[PluginConfig]] = PluginConfig
    #: what its inputs are: "models" (model folders) or "adapters" (LoRA adapters of one base)
    merges: ClassVar[str] = "models"

    @abstractmethod
    def prepare(self, request: MergeRequest) -> PreparedMerge:
        """Check ``request`` against this method without heavy work; raise ConfigError or ModelLoadError
        naming the input at fault, else return the merge ready to run."""


class Launcher(Plugin):
    """How the processes of a training run are started: on this machine, across nodes, or by a cluster manager.

    ``ftsdk train`` hands it a :class:`ftsdk.plugin.jobs.LaunchRequest`: the same ``ftsdk train`` command
    for every process, the ``distributed`` settings (processes per node, nodes, rendezvous, restarts) and the
    output folder. The processes it starts must see torch.distributed's variables (RANK, WORLD_SIZE, ...).
    """

    kind: ClassVar[str] = "launcher"

    def check(self, request: LaunchRequest) -> None:
        """Raise :class:`ftsdk.plugin.errors.ConfigError` if this launcher cannot start ``request`` (before any work)."""

    @abstractmethod
    def launch(self, request: LaunchRequest) -> int:
        """Start the run (or submit it) and return an exit status: 0 when it succeeded (or was submitted)."""


INTERFACE_OF_KIND: dict[str, type[Plugin]] = {
    "adapter": Adapter,
    "objective": Objective,
    "quantizer": Quantizer,
    "merger": Merger,
    "launcher": Launcher,
}
