"""What an objective receives and returns, and the Trainer arguments every objective shares."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.config import TrainingConfig
from ftsdk.device import Placement

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from ftsdk.distributed.config import DistributedConfig


@dataclass
class TrainJob:
    """Everything an objective needs to train: the wrapped model, the data and the settings."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    #: the objective's data task's examples: conversations for "sft", dicts for other tasks
    train_examples: list[Any]
    eval_examples: list[Any] | None
    training: TrainingConfig
    placement: Placement
    work_dir: Path
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

    metrics: dict[str, float]
    log_history: list[dict[str, Any]]
    #: keep-best / early stopping: the metric, its best value and step, restored or not (ftsdk.early_stopping)
    best: dict[str, Any] | None = None


def mixed_precision(training: TrainingConfig, placement: Placement) -> str:
    """The autocast precision a run uses: "bf16", "fp16" or "no" (resolving "auto" for the device)."""
    weights = placement.dtype_name
    if weights in ("bfloat16", "float16"):
        return "bf16" if weights == "bfloat16" else "fp16"
    if training.mixed_precision == "auto":
        return "bf16" if placement.native_bf16 else "no"
    return training.mixed_precision


def _checkpointing_argument() -> str:
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def trainer_arguments(job: TrainJob) -> dict[str, Any]:
    """Keyword arguments for any ``transformers.TrainingArguments`` subclass (SFTConfig, DPOConfig, ...)."""
    t = job.training
    checkpointing = _checkpointing_argument()  # renamed in transformers 5
    precision = mixed_precision(t, job.placement)
    has_eval = bool(job.eval_examples)
    from ftsdk.distributed.strategies import trainer_options
    from ftsdk.distributed.world import current_world
    from ftsdk.early_stopping import best_arguments

    return {
        "output_dir": str(job.work_dir),
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "learning_rate": t.learning_rate,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "warmup_steps": t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "lr_scheduler_type": t.lr_scheduler,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "eval_strategy": ("steps" if t.eval_steps else "epoch") if has_eval else "no",
        "eval_steps": t.eval_steps,
        "save_strategy": "steps" if t.save_steps else "no",
        **({"save_steps": t.save_steps} if t.save_steps else {}),
        "save_total_limit": None,  # ftsdk rotates only sealed checkpoints (ftsdk.checkpoint_callback)
        # not read by Trainer.train() itself: run_trainer passes it on
        "resume_from_checkpoint": str(job.resume_from) if job.resume_from else None,
        "report_to": "none",  # ftsdk adds transformers' tracker callbacks itself (ftsdk.tracking)
        "run_name": job.run_name,
        "disable_tqdm": True,  # ftsdk draws its own progress bar
        checkpointing: t.gradient_checkpointing,
        # TRL/Trainer defaults assume a GPU: say explicitly where we run and in which precision
        "use_cpu": job.placement.on_cpu,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "dataloader_pin_memory": not job.placement.on_cpu,
        **trainer_options(job.distributed, current_world(), job.placement.device),
        **best_arguments(t),
    }


#: logged values that describe the run's mechanics rather than its result
_NOT_METRICS = {"epoch", "step", "learning_rate", "grad_norm", "total_flos", "eval_runtime",
                "eval_samples_per_second", "eval_steps_per_second", "train_steps_per_second"}


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last value of each logged metric (train summary, last eval, ...)."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and key not in _NOT_METRICS:
                metrics[key] = float(value)
    return metrics


def run_trainer(trainer: Any) -> TrainOutcome:
    """Train a ``transformers.Trainer`` quietly (ftsdk's bar replaces its printing) and collect the outcome."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ftsdk.distributed.fsdp import is_sharded, keep_sharded
    from ftsdk.distributed.strategies import check_trainer

    if is_sharded(trainer.model):
        keep_sharded(trainer)  # FSDP2 reduces the gradients itself: no DDP around it
    check_trainer(trainer)  # the world and strategy asked for, not a silent fallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in trainer.callback_handler.callbacks:
        if callable(getattr(callback, "attach", None)):
            callback.attach(trainer)  # callbacks that log through the trainer (ftsdk.early_stopping.TaskMetrics)
    if not trainer.args.bf16:
        _undo_bf16_adapter_cast(trainer.model)
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    # accelerate wrapped forward() in an autocast for mixed precision: undo it, so the trained model
    # computes exactly as it will when reloaded from disk
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    history = list(trainer.state.log_history)
    from ftsdk.early_stopping import best_summary

    return TrainOutcome(final_metrics(history), history, best_summary(trainer))


def _undo_bf16_adapter_cast(model: Any) -> None:
    """TRL casts quantized models' adapter weights to bf16 on every device; train them in float32 instead.

    On CPUs without bf16 instructions bf16 is several times slower, and the saved adapter would
    not match the trained one.
    """
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype == torch.bfloat16:
            parameter.data = parameter.data.float()


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide the ``datasets`` progress bars of data preparation (ftsdk shows its own)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()
