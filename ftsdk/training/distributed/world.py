"""Which process this is in a distributed run, who launched it, and the launch traps ftsdk refuses."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ftsdk.plugin.errors import ConfigError
from ftsdk.training.distributed.config import DistributedConfig


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one training run (read from the launcher's variables)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1
    #: "torchrun", "accelerate", "ray" or None (a plain process)
    launcher: str | None = None

    @property
    def is_main(self) -> bool:
        """The process that writes outputs and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world(env: Mapping[str, str] | None = None) -> World:
    """The world described by the launcher's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
    env = os.environ if env is None else env
    if env.get("FTSDK_LAUNCHER"):  # set by launcher plugins whose engine sets no variable of its own (ray)
        launcher: str | None = env["FTSDK_LAUNCHER"]
    elif any(key.startswith("ACCELERATE_") for key in env):
        launcher = "accelerate"
    elif "TORCHELASTIC_RUN_ID" in env:
        launcher = "torchrun"
    else:
        launcher = None
    size = int(env.get("WORLD_SIZE", "1"))
    return World(
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        size=size,
        local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))),
        launcher=launcher,
    )


def launched() -> bool:
    """Whether this process already runs under a distributed launcher (then ``ftsdk train`` must not relaunch)."""
    return "WORLD_SIZE" in os.environ


def elastic_restart(output_dir: str | Path, env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is an elastic restart (torchrun's ``--max-restarts``, a requeued Slurm job) of a run
    that left a sealed checkpoint for ``output_dir``: then it continues from there instead of starting over."""
    env = os.environ if env is None else env
    if int(env.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0 and int(env.get("SLURM_RESTART_COUNT", "0")) == 0:
        return False
    from ftsdk.training.checkpoints import checkpoints_dir, complete_checkpoints

    return bool(complete_checkpoints(checkpoints_dir(output_dir)))


def check_world(config: DistributedConfig | None, world: World, device: str) -> None:
    """Refuse the launches that would silently train something else than asked (before any model is loaded)."""
    if config is not None and config.world_size is not None and world.size != config.world_size:
        nodes = f" x nnodes {config.nnodes}" if config.nnodes > 1 else ""
        raise ConfigError(
            f"distributed.nproc is {config.nproc}{nodes} but this process sees a world of {world.size} "
            f"(launcher: {world.launcher or 'none'})",
            hint=_launch_hint(world),
        )
    if config is not None and world.size == 1 and config.nproc != 1:
        raise ConfigError(
            f"distributed.strategy '{config.strategy}' asks for several processes, but this one is alone "
            f"(WORLD_SIZE={os.environ.get('WORLD_SIZE', 'unset')}, launcher: {world.launcher or 'none'})",
            hint=_launch_hint(world),
        )
    strategy = config.strategy if config is not None else "ddp"
    backend = config.backend if config is not None else "auto"
    if device == "cpu" and backend == "nccl":
        raise ConfigError("distributed.backend 'nccl' needs CUDA GPUs; this run is on the CPU",
                          hint="use backend: auto (gloo on CPU)")
    if device == "cuda" and world.distributed:
        import torch

        if world.local_size > torch.cuda.device_count():
            raise ConfigError(
                f"{world.local_size} processes on this machine but only {torch.cuda.device_count()} GPU(s)",
                hint="start one process per GPU (--nproc), or set CUDA_VISIBLE_DEVICES",
            )
    if strategy.startswith("deepspeed") and world.distributed:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            from ftsdk.plugin.errors import PluginUnavailableError

            raise PluginUnavailableError(
                f"distributed.strategy '{strategy}' needs DeepSpeed, which is not installed",
                hint="pip install deepspeed (it installs without CUDA too)",
            )


def _launch_hint(world: World) -> str:
    if world.launcher == "accelerate":
        return ("`accelerate launch --cpu --num_processes N` starts ONE process whatever N says; start the "
                "processes with `ftsdk train --nproc N RECIPE.yaml` or `torchrun --nproc-per-node N -m ftsdk.cli "
                "train RECIPE.yaml` instead")
    return "start the processes with `ftsdk train --nproc N RECIPE.yaml` (or torchrun), or drop the distributed section"


def backend_for(config: DistributedConfig | None, device: str) -> str:
    """The torch.distributed backend: the configured one, else nccl on CUDA and gloo on the CPU."""
    if config is not None and config.backend != "auto":
        return config.backend
    return "nccl" if device == "cuda" else "gloo"


def pin_device(world: World, device: str) -> None:
    """Make ``cuda`` mean this process's own GPU (``cuda:LOCAL_RANK``) before any model is loaded onto it."""
    if device == "cuda" and world.distributed:
        import torch

        torch.cuda.set_device(world.local_rank)
