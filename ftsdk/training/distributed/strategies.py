"""Each strategy as ``transformers.TrainingArguments`` options, and the checks that the Trainer really uses it."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from ftsdk.plugin.errors import ConfigError
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.distributed.fsdp import check_sharded, full_state_dict, is_sharded
from ftsdk.training.distributed.world import World, backend_for, current_world


def trainer_options(config: DistributedConfig | None, world: World, device: str) -> dict[str, Any]:
    """TrainingArguments keywords for ``config`` (DDP when a launcher started several processes without one).

    fsdp2 needs none beyond the backend: ftsdk shards the model itself before the Trainer sees it
    (:func:`ftsdk.training.distributed.fsdp.shard_model`), on CUDA and on the CPU alike.
    """
    if not world.distributed and config is None:
        return {}
    config = config or DistributedConfig()
    options: dict[str, Any] = {"ddp_backend": backend_for(config, device)}
    if config.strategy == "ddp":
        options["ddp_find_unused_parameters"] = config.find_unused_parameters
    elif config.uses_deepspeed:
        options["deepspeed"] = deepspeed_config(config, device)
    return options


def check_strategy(config: DistributedConfig | None, save_steps: int | None) -> None:
    """Refuse the settings a strategy cannot honour (before any model is loaded).

    Elastic restarts continue from ftsdk's sealed checkpoints: without ``save_steps`` a restarted run would
    silently start over from step 0, so ``max_restarts`` asks for them.
    """
    if config is not None and config.max_restarts and not save_steps:
        raise ConfigError(
            f"distributed.max_restarts is {config.max_restarts} but training.save_steps is not set: restarted "
            "processes would have no checkpoint to continue from and would train from step 0 again",
            hint="set training.save_steps (e.g. 50), or drop --max-restarts",
        )


def deepspeed_config(config: DistributedConfig, device: str) -> dict[str, Any]:
    """A DeepSpeed config whose batch sizes, clipping and precision the Trainer fills from ``training`` ("auto").

    DeepSpeed's own ``gradient_clipping`` default is 1.0: "auto" makes it ``training.max_grad_norm``, so that
    0 really disables clipping. No optimizer section: DeepSpeed then steps the Trainer's own AdamW.
    """
    zero: dict[str, Any] = {"stage": config.zero_stage}
    if config.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if config.offload_optimizer:
        if device != "cuda":
            raise ConfigError("distributed.offload_optimizer moves optimizer state off the GPU; this run is on the CPU",
                              hint="set offload_optimizer: false")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    generated: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
    return _merged(generated, config.deepspeed_config)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_trainer(trainer: Any) -> None:
    """Refuse a Trainer whose accelerator does not run the world and strategy that were asked for.

    Catches the silent fallbacks: two independent world-1 trainings (``use_cpu`` wrong under DeepSpeed), FSDP
    quietly replaced by DDP (the Trainer's ``fsdp=`` on the CPU, or DDP around an FSDP2 model), a model not
    sharded over the whole world, DeepSpeed configured but not engaged.
    """
    world = current_world()
    args = trainer.args
    kind = str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1]
    if args.world_size != world.size:
        raise ConfigError(
            f"the launcher started {world.size} processes but the Trainer sees a world of {args.world_size}: "
            "each process would train on its own",
            hint="on a CPU machine the Trainer must be told use_cpu=True (ftsdk does); check CUDA_VISIBLE_DEVICES",
        )
    if args.deepspeed and kind != "DEEPSPEED":
        raise ConfigError(f"DeepSpeed was configured but the Trainer runs '{kind}'", hint="check the launcher")
    if args.fsdp:
        raise ConfigError(f"the Trainer's own fsdp option is set ('{args.fsdp}'; it falls back to DDP off CUDA)",
                          hint="use distributed.strategy: fsdp2, which shards the model before the Trainer")
    model = getattr(trainer, "model", None)
    if model is not None and is_sharded(model):
        if not getattr(model, "_is_accelerate_prepared", False):
            raise ConfigError(f"the FSDP2 model would be wrapped again by the Trainer's accelerator ('{kind}', DDP)",
                              hint="run the Trainer through ftsdk.training.trainer.run_trainer, which prevents it")
        check_sharded(model, world)


@contextlib.contextmanager
def full_parameters(model: Any, main: bool) -> Iterator[None]:
    """Within the block the ``main`` process can save ``model`` whole (ZeRO-3 and FSDP2 keep only shards).

    Collective: every process of the run must enter it. A no-op for unsharded models.
    """
    if is_sharded(model):
        with full_state_dict(model, main):
            yield
        return
    if any(hasattr(p, "ds_id") for p in model.parameters()):  # ZeRO-3 partitioned parameters
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
        return
    yield
