"""What an objective receives and returns, and the Trainer arguments every objective shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftsdk.models.device import Placement
from ftsdk.plugin.jobs import TrainJob, TrainOutcome
from ftsdk.training.recipe import TrainingConfig

if TYPE_CHECKING:

    pass


def mixed_precision(training: TrainingConfig, placement: Placement) -> str:
    """The autocast precision a run uses: "bf16", "fp16" or "no" (resolving "auto" for the device)."""
    weights = placement.dtype_name
    if weights in ("bfloat16", "float16"):
        return "bf16" if weights == "bfloat16" else "fp16"
    if training.mixed_precision == "auto":
        return "bf16" if placement.native_bf16 else "no"
    return training.mixed_precision


#: ftsdk's optimizer names -> transformers' ``optim`` values (every one takes a step on CPU; tests/test_optimizers.py)
OPTIMIZERS = {
    "adamw": "adamw_torch_fused",  # transformers 5's default; fused on CPU too
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw": "paged_adamw_32bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "adafactor": "adafactor",
    "sgd": "sgd",
    "adagrad": "adagrad",
    "rmsprop": "rmsprop",
    "lion": "lion_32bit",
    "lion_8bit": "lion_8bit",
    "ademamix": "ademamix",
    "ademamix_8bit": "ademamix_8bit",
}
#: optimizers bitsandbytes provides
BNB_OPTIMIZERS = frozenset({"adamw_8bit", "paged_adamw", "paged_adamw_8bit", "lion", "lion_8bit", "ademamix",
                            "ademamix_8bit"})


def check_optimizer(training: TrainingConfig) -> None:
    """Refuse, before any model loads, a bitsandbytes optimizer when bitsandbytes is not installed."""
    import importlib.util

    from ftsdk.plugin.errors import ConfigError

    if training.optimizer in BNB_OPTIMIZERS and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"training.optimizer {training.optimizer} comes from bitsandbytes, which is not installed",
                          hint='pip install "ftsdk[bnb]"')


def optimizer_arguments(t: TrainingConfig) -> dict[str, Any]:
    """TrainingArguments for the optimizer and the learning-rate schedule's own options."""
    schedule: dict[str, Any] = {
        "cosine_with_restarts": {"num_cycles": t.lr_cycles},
        "polynomial": {"power": t.lr_power, "lr_end": t.lr_min_ratio * t.learning_rate},
        "cosine_with_min_lr": {"min_lr_rate": t.lr_min_ratio},
        "warmup_stable_decay": {"num_decay_steps": t.lr_decay_steps, "min_lr_ratio": t.lr_min_ratio},
    }.get(t.lr_scheduler, {})
    return {
        "optim": OPTIMIZERS[t.optimizer],
        "adam_beta1": t.adam_betas[0],
        "adam_beta2": t.adam_betas[1],
        "adam_epsilon": t.adam_epsilon,
        "optim_args": f"momentum={t.momentum}" if t.momentum else None,
        "lr_scheduler_kwargs": schedule,
    }


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
    from ftsdk.training.distributed.strategies import trainer_options
    from ftsdk.training.distributed.world import current_world
    from ftsdk.training.early_stopping import best_arguments

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
        **optimizer_arguments(t),
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
        "save_total_limit": None,  # ftsdk rotates only sealed checkpoints (ftsdk.training.checkpoint_callback)
        # not read by Trainer.train() itself: run_trainer passes it on
        "resume_from_checkpoint": str(job.resume_from) if job.resume_from else None,
        "report_to": "none",  # ftsdk adds transformers' tracker callbacks itself (ftsdk.training.tracking)
        "run_name": job.run_name,
        "disable_tqdm": True,  # ftsdk draws its own progress bar
        checkpointing: t.gradient_checkpointing,
        **({"train_sampling_strategy": "group_by_length"} if t.group_by_length else {}),
        "torch_compile": t.torch_compile,
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


def check_trained(outcome: Any, objective: str) -> TrainOutcome:
    """Refuse what an objective's ``train`` returned unless it is a TrainOutcome whose log reports a training step.

    An objective that returns without training would otherwise be saved as a trained model ("trained in 0s").
    """
    from ftsdk.plugin.errors import PluginError

    if not isinstance(outcome, TrainOutcome):
        raise PluginError(f"objective '{objective}' returned {type(outcome).__name__} from train(), not a TrainOutcome",
                          hint="return ftsdk.run_trainer(trainer), or ftsdk.TrainOutcome(metrics, log_history)")
    steps = [entry.get("step") for entry in outcome.log_history]
    if not any(isinstance(step, int) and step > 0 for step in steps):
        raise PluginError(f"objective '{objective}' reported no training step: its log_history has no entry with "
                          "a step above 0, so nothing was trained",
                          hint="train the model in train() and return ftsdk.run_trainer(trainer) (or a TrainOutcome "
                          "whose log_history holds the Trainer's state.log_history)")
    return outcome


def run_trainer(trainer: Any) -> TrainOutcome:
    """Train a ``transformers.Trainer`` quietly (ftsdk's bar replaces its printing) and collect the outcome."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ftsdk.training.distributed.fsdp import is_sharded, keep_sharded
    from ftsdk.training.distributed.strategies import check_trainer

    if is_sharded(trainer.model):
        keep_sharded(trainer)  # FSDP2 reduces the gradients itself: no DDP around it
    check_trainer(trainer)  # the world and strategy asked for, not a silent fallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in trainer.callback_handler.callbacks:
        if callable(getattr(callback, "attach", None)):
            callback.attach(trainer)  # callbacks that log through the trainer (ftsdk.training.early_stopping.TaskMetrics)
    if not trainer.args.bf16:
        _undo_bf16_adapter_cast(trainer.model)
    _loraplus_optimizer(trainer)
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    # accelerate wrapped forward() in an autocast for mixed precision: undo it, so the trained model
    # computes exactly as it will when reloaded from disk
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    history = list(trainer.state.log_history)
    from ftsdk.training.early_stopping import best_summary

    return TrainOutcome(final_metrics(history), history, best_summary(trainer))


def _loraplus_optimizer(trainer: Any) -> None:
    """LoRA+ (the lora adapter's ``loraplus_lr_ratio``): PEFT's optimizer with B's learning rate scaled, built
    from the optimizer class and options ftsdk's settings chose; the Trainer then schedules its groups."""
    ratio = getattr(trainer.model, "ftsdk_loraplus_lr_ratio", None)
    if ratio is None or trainer.optimizer is not None:
        return
    from peft.optimizers import create_loraplus_optimizer

    optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    kwargs = dict(kwargs)
    learning_rate = kwargs.pop("lr")
    trainer.optimizer = create_loraplus_optimizer(trainer.model, optimizer_cls, lr=learning_rate,
                                                  loraplus_lr_ratio=ratio,
                                                  loraplus_weight_decay=trainer.args.weight_decay, **kwargs)


def _undo_bf16_adapter_cast(model: Any) -> None:
    """TRL casts quantized models' adapter weights to bf16 on every device; train them in float32 instead.

    On CPUs without bf16 instructions bf16 is several times slower, and the saved adapter would
    not match the trained one.
    """
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype == torch.bfloat16:
            parameter.data = parameter.data.float()
