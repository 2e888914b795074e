"""What the core hands a plugin to work on: one dataclass per kind of job, data only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from ftsdk.models.device import Placement
    from ftsdk.plugin.kinds import PluginConfig
    from ftsdk.training.distributed.config import DistributedConfig
    from ftsdk.training.recipe import TrainingConfig


@dataclass
class TrainJob:
    """Everything an objective needs to train: the wrapped model, the data and the settings."""

    #: the base model, prepared by the objective and wrapped by the adapter: what trains
    model: PreTrainedModel
    #: the base model's tokenizer (its chat template renders the conversations)
    tokenizer: PreTrainedTokenizerBase
    #: the objective's data task's examples: conversations for "sft", dicts for other tasks
    train_examples: list[Any]
    #: the evaluation split's examples, in the same shape; None when no eval data was given
    eval_examples: list[Any] | None
    #: the recipe's training settings (steps, learning rate, batch size, precision, ...)
    training: TrainingConfig
    #: the device and dtype the model is on
    placement: Placement
    #: a scratch folder for the trainer's own files (checkpoints when saving is on)
    work_dir: Path
    #: Trainer callbacks ftsdk adds (progress bar, checkpoints, trackers, early stopping): pass them on
    callbacks: list[TrainerCallback] = field(default_factory=list)
    #: several processes: the strategy (None: one process, or DDP when a launcher started several)
    distributed: DistributedConfig | None = None
    #: continue from this checkpoint folder (``work_dir`` then holds the run's checkpoints)
    resume_from: Path | None = None
    #: the experiment trackers' run name (None when no tracker is on)
    run_name: str | None = None


@dataclass
class TrainOutcome:
    """Final metrics and the per-step log of a training run."""

    #: the final value of each logged metric (train_loss, eval_loss, num_tokens, ...)
    metrics: dict[str, float]
    #: every logged entry, in order (the Trainer's ``state.log_history``): the loss curve and the report read it
    log_history: list[dict[str, Any]]
    #: keep-best / early stopping: the metric, its best value and step, restored or not (ftsdk.training.early_stopping)
    best: dict[str, Any] | None = None


@dataclass(frozen=True)
class QuantizeJob:
    """One quantization, checked and ready: what :meth:`ftsdk.plugin.kinds.Quantizer.quantize` works on."""

    #: the model to quantize: a transformers folder, or a PEFT adapter folder for quantizers accepting adapters
    source: Path
    #: "model" or "adapter"
    source_kind: str
    #: the empty folder to write into (a temporary sibling of the final output)
    output: Path
    #: calibration texts, when the quantizer ``uses_calibration``; else None
    calibration: list[str] | None = None


@dataclass(frozen=True)
class MergeInput:
    """One input as the config names it, with its own options (validated, unresolved)."""

    #: the model as the config names it: a folder, an adapter folder or an alias
    reference: str
    #: its per-input options (``weight``, ``density``...), validated against the merger's ``InputParams``
    params: PluginConfig
    #: position under ``models``; None for a base model the list does not name
    index: int | None
    #: the layers a mergekit slice took from it (only the full range is supported)
    layer_range: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        """How errors name this input: ``models[1] (path)`` or ``base_model (path)``."""
        return f"{'base_model' if self.index is None else f'models[{self.index}]'} ({self.reference})"


@dataclass(frozen=True)
class MergeRequest:
    """What a merger is asked to do."""

    #: the merger's name
    method: str
    #: the inputs in config order; the base model is last when ``models`` does not name it (as in mergekit)
    inputs: tuple[MergeInput, ...]
    #: the base model among ``inputs``, or None
    base: MergeInput | None
    #: per-input options set for every input under the config's ``parameters``
    defaults: PluginConfig
    #: the dtype the math runs in (None: the inputs' own)
    dtype: str | None
    #: the dtype the output is saved in (None: ``dtype``)
    out_dtype: str | None
    #: the input whose tokenizer (and vocabulary size) the output takes
    tokenizer_source: MergeInput
    #: the largest safetensors shard the output is written in, in bytes
    max_shard_size: int
    #: torch threads for the math while merging (None: every core but one)
    threads: int | None = None

    @property
    def others(self) -> tuple[MergeInput, ...]:
        """The inputs other than the base model."""
        return tuple(i for i in self.inputs if i is not self.base)


@dataclass(frozen=True)
class LaunchRequest:
    """One run to start: the ``ftsdk`` arguments every process runs, and how many processes where."""

    #: ``ftsdk`` arguments of every process (``["train", RECIPE, ...]``), without the launch options
    argv: list[str]
    #: the recipe's ``distributed`` section with the command line's settings applied
    distributed: DistributedConfig
    #: the run's output folder (checkpoints go beside it): on shared storage for several nodes
    output_dir: Path
    #: variables every process needs (the command line's distributed settings)
    env: dict[str, str] = field(default_factory=dict)
    #: this node's rank, when the user gave it (c10d's rendezvous assigns ranks otherwise)
    node_rank: int | None = None
    #: submit the job to the cluster's scheduler, not only write it (slurm)
    submit: bool = False

    @property
    def nproc(self) -> int:
        """Processes per node (one when the recipe leaves it open)."""
        return self.distributed.nproc or 1

    @property
    def rdzv_id(self) -> str:
        """The rendezvous id, the same on every node for the same command: the recipe's, else the output's hash."""
        if self.distributed.rdzv_id:
            return self.distributed.rdzv_id
        return "ftsdk-" + hashlib.sha256(str(self.output_dir.resolve()).encode()).hexdigest()[:16]
