"""FSDP2: shard a model with PyTorch's ``fully_shard`` before the Trainer sees it, on CUDA and on the CPU alike.

The Trainer's ``fsdp=`` option and accelerate's FSDP plugin run FSDP on CUDA only and silently fall back to DDP
on the CPU; sharding the model ourselves gives one code path on both, with gloo or nccl.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ConfigError
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.distributed.world import World, backend_for

#: torch dtype names of the autocast precisions FSDP2 computes in
_PARAM_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def shard_model(model: Any, config: DistributedConfig, world: World, device: str, precision: str) -> None:
    """Shard ``model`` in place over all processes: each decoder layer is one FSDP2 unit, the rest is the root's.

    Starts the process group (the Trainer's accelerator joins it). ``precision`` ("bf16", "fp16", "no") sets the
    mixed precision policy: parameters gathered and computed in that dtype, gradients reduced in float32.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    layers = decoder_layers(model)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(config, device))
    mesh = init_device_mesh(device, (world.size,))
    param_dtype = getattr(torch, _PARAM_DTYPES[precision]) if precision in _PARAM_DTYPES else None
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=config.reshard_after_forward, mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=config.reshard_after_forward, mp_policy=policy)


def decoder_layers(model: Any) -> list[Any]:
    """The modules FSDP2 shards one by one: those transformers keeps whole (``_no_split_modules``, the layers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    # fully_shard turns a module's class into a subclass (FSDPLlamaDecoderLayer): look along the class's bases
    layers = [module for module in model.modules() if any(cls.__name__ in names for cls in type(module).__mro__)]
    if not layers:
        raise ConfigError(
            f"distributed.strategy 'fsdp2' shards a model layer by layer, but {type(base).__name__} names no "
            "decoder layer class (_no_split_modules)",
            hint="use strategy: ddp or deepspeed_zero3 for this model",
        )
    return layers


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is an FSDP2 (``fully_shard``) module."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def check_sharded(model: Any, world: World) -> None:
    """Refuse a model whose trainable parameters are not all DTensors sharded over the ``world.size`` processes."""
    from torch.distributed.tensor import DTensor, Shard

    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if not isinstance(parameter, DTensor) or parameter.device_mesh.size() != world.size or not all(
            isinstance(placement, Shard) for placement in parameter.placements
        ):
            raise ConfigError(f"fsdp2: the trainable parameter {name} is not sharded over the {world.size} processes",
                              hint="report this with the model and adapter used")


def keep_sharded(trainer: Any) -> None:
    """Stop the Trainer's accelerator from wrapping the FSDP2 model in DDP; it still applies its autocast.

    accelerate's ``prepare_model(evaluation_mode=True)`` applies mixed precision only and marks the model prepared,
    so the Trainer's own ``accelerator.prepare`` leaves it as is (FSDP2 reduces the gradients itself). The
    Trainer's checkpoints become sharded ones (:func:`shard_checkpoints`).
    """
    trainer.accelerator.prepare_model(trainer.model, device_placement=False, evaluation_mode=True)
    shard_checkpoints(trainer)


#: the folders of a checkpoint that hold the DCP (torch.distributed.checkpoint) shards of every process
MODEL_SHARDS = "fsdp2-model"
OPTIMIZER_SHARDS = "fsdp2-optimizer"
SCHEDULER_FILE = "scheduler.pt"


def shard_checkpoints(trainer: Any) -> None:
    """Make the Trainer save and load the FSDP2 model's checkpoints with torch.distributed.checkpoint (DCP).

    The Trainer's own code would save one process's shards as if they were the whole weights and optimizer state.
    Instead every process writes its shards of the trainable weights and of the optimizer state (DCP's files
    plus its ``.metadata``); the scheduler, RNG states and trainer state stay the Trainer's. DCP reshards on
    load, so a checkpoint resumes on another world size. ftsdk's seal then covers every process's files.
    """
    model = trainer.model
    save_model = trainer.save_model

    def save_checkpoint_model(output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not _internal_call:  # not a checkpoint: the Trainer's own save
            save_model(output_dir, _internal_call)
            return
        import torch.distributed.checkpoint as dcp

        dcp.save(trainable_state(model), checkpoint_id=Path(output_dir or trainer.args.output_dir) / MODEL_SHARDS)

    def save_optimizer_and_scheduler(output_dir: str) -> None:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        dcp.save(get_optimizer_state_dict(model, _unwrapped(trainer.optimizer)),
                 checkpoint_id=Path(output_dir) / OPTIMIZER_SHARDS)
        if trainer.args.should_save:
            torch.save(trainer.lr_scheduler.state_dict(), Path(output_dir) / SCHEDULER_FILE)

    def load_model(checkpoint: str, model_arg: Any = None) -> None:
        load_sharded_model(model, Path(checkpoint))

    def load_optimizer_and_scheduler(checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        import torch

        load_sharded_optimizer(model, _unwrapped(trainer.optimizer), Path(checkpoint))
        trainer.lr_scheduler.load_state_dict(torch.load(Path(checkpoint) / SCHEDULER_FILE, weights_only=True))

    def load_best_model() -> None:
        load_sharded_model(model, Path(trainer.state.best_model_checkpoint))

    trainer.save_model = save_checkpoint_model
    trainer._save_optimizer_and_scheduler = save_optimizer_and_scheduler
    trainer._load_from_checkpoint = load_model
    trainer._load_optimizer_and_scheduler = load_optimizer_and_scheduler
    trainer._load_best_model = load_best_model


def trainable_state(model: Any) -> dict[str, Any]:
    """The sharded (DTensor) state of ``model``'s trainable parameters, by name: what a checkpoint must hold."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    names = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    return {name: tensor for name, tensor in get_model_state_dict(model).items() if name in names}


def load_sharded_model(model: Any, checkpoint: Path) -> None:
    """Load the trainable weights of a sharded checkpoint into ``model`` (resharded to this world by DCP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = trainable_state(model)
    dcp.load(state, checkpoint_id=checkpoint / MODEL_SHARDS)
    set_model_state_dict(model, state, options=StateDictOptions(strict=False))


def load_sharded_optimizer(model: Any, optimizer: Any, checkpoint: Path) -> None:
    """Load the optimizer state of a sharded checkpoint (DCP fills a template of this world's shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer)  # initialises an empty optimizer's state to fill
    dcp.load(state, checkpoint_id=checkpoint / OPTIMIZER_SHARDS)
    set_optimizer_state_dict(model, optimizer, state)


def _unwrapped(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer``."""
    return getattr(optimizer, "optimizer", optimizer)


@contextlib.contextmanager
def full_state_dict(model: Any, main: bool) -> Iterator[None]:
    """Within the block, ``model.state_dict()`` on the ``main`` process returns the whole gathered weights.

    Collective: every process must enter it. The weights are gathered into CPU memory of the main process only
    (``full_state_dict=True, cpu_offload=True``). ``Adapter.save`` writes what ``model.state_dict()`` returns
    (``save_pretrained`` of PEFT and transformers both read it), so the instance's method is replaced meanwhile.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    gathered = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        yield
        return
    first_name: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        # tied weights (lm_head = embeddings) were gathered as separate copies: make them one tensor again, so
        # save_pretrained drops the tied duplicate as it does for an unsharded model
        first = first_name.setdefault(id(parameter), name)
        if first != name and name in gathered:
            gathered[name] = gathered[first]
    model.state_dict = lambda *args, **kwargs: dict(gathered)
    try:
        yield
    finally:
        del model.state_dict
