"""The recipe's ``distributed:`` section: how several processes share one training run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ftsdk.plugin.settings import StrictModel

Strategy = Literal["ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3"]


class DistributedConfig(StrictModel):
    """Data-parallel training over several processes (one per GPU, or several on one CPU machine).

    Every process holds the model (or, with fsdp2 and ZeRO-3, a shard of it) and trains on its own
    ``training.batch_size`` examples per step: the global batch is ``batch_size x world size``.
    """

    strategy: Strategy = Field(
        "ddp",
        description="ddp: every process keeps the whole model, gradients are averaged (PyTorch DDP). "
        "fsdp2: parameters, gradients and optimizer state are sharded (PyTorch FSDP2 `fully_shard`, GPUs or CPUs; "
        "checkpoints are sharded with torch.distributed.checkpoint). "
        "deepspeed_zero2: optimizer state and gradients are sharded (DeepSpeed ZeRO stage 2). "
        "deepspeed_zero3: parameters are sharded too (ZeRO stage 3). DeepSpeed needs `pip install deepspeed`.",
    )
    nproc: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Processes `ftsdk train` starts on each machine (under the launcher); `--nproc` overrides it. "
        "Under your own launcher (torchrun, accelerate launch) it is the number per machine ftsdk expects to see.",
    )
    nnodes: int = Field(
        1,
        ge=1,
        le=4096,
        description="Machines (nodes) of the run, each starting `nproc` processes: the world size is "
        "nnodes x nproc. `--nnodes` overrides it.",
    )
    launcher: str = Field(
        "torchrun",
        min_length=1,
        description="The launcher plugin that starts the processes (`ftsdk plugins` lists them): torchrun (the "
        "same command on every node), slurm (writes and submits an sbatch script), ray (Ray Train's "
        "TorchTrainer). `--launcher` overrides it.",
        exclude=True,
    )
    launcher_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the launcher plugin (see its page under Launchers).",
        exclude=True,
    )
    rdzv_endpoint: str | None = Field(
        None,
        pattern=r"^\[?[A-Za-z0-9_.:-]+\]?(:\d{1,5})?$",
        description="HOST:PORT of the c10d rendezvous every node joins (a node of the run that all others reach; "
        "the port must be free there). Needed when nnodes > 1 under torchrun; `--rdzv-endpoint` overrides it.",
        exclude=True,
    )
    rdzv_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="The rendezvous id, equal on every node (default: derived from the output folder, so the same "
        "command gives the same id).",
        exclude=True,
    )
    max_restarts: int = Field(
        0,
        ge=0,
        le=100,
        description="Elastic restarts: when a process dies, torchrun restarts all of them up to this many times; "
        "they continue from the newest sealed checkpoint (needs training.save_steps). `--max-restarts` "
        "overrides it.",
        exclude=True,
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Communication backend: auto picks nccl on CUDA and gloo on CPU."
    )
    find_unused_parameters: bool = Field(
        False,
        description="ddp: look for parameters that get no gradient in a step (needed only by models with "
        "branches that some steps skip; costs a pass over the graph).",
    )
    reshard_after_forward: bool = Field(
        True,
        description="fsdp2: free the gathered parameters after each forward (less memory, one more gather in "
        "the backward).",
    )
    offload_optimizer: bool = Field(
        False, description="deepspeed: keep the optimizer state in CPU memory (ZeRO-Offload; GPU runs only)."
    )
    deepspeed_config: dict[str, Any] = Field(
        default_factory=dict,
        description="deepspeed: extra keys merged over the generated DeepSpeed config (e.g. "
        "{zero_optimization: {overlap_comm: true}}); batch sizes, clipping and precision come from `training`.",
    )

    @property
    def world_size(self) -> int | None:
        """The processes of the whole run (``nproc x nnodes``), or None when ``nproc`` is not set."""
        return None if self.nproc is None else self.nproc * self.nnodes

    @property
    def needs_launch(self) -> bool:
        """Whether ``ftsdk train`` must start the processes through a launcher (not already under one)."""
        return self.nproc is not None or self.nnodes > 1 or self.launcher != "torchrun"

    @property
    def uses_deepspeed(self) -> bool:
        return self.strategy.startswith("deepspeed")

    @property
    def zero_stage(self) -> int | None:
        """DeepSpeed's ZeRO stage of this strategy (None for ddp and fsdp2)."""
        return {"deepspeed_zero2": 2, "deepspeed_zero3": 3}.get(self.strategy)
