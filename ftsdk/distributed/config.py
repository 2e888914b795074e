"""The recipe's ``distributed:`` section: how several processes share one training run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ftsdk.kinds import PluginConfig

Strategy = Literal["ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3"]


class DistributedConfig(PluginConfig):
    """Data-parallel training over several processes (one per GPU, or several on one CPU machine).

    Every process holds the model (or, with fsdp2 and ZeRO-3, a shard of it) and trains on its own
    ``training.batch_size`` examples per step: the global batch is ``batch_size x world size``.
    """

    strategy: Strategy = Field(
        "ddp",
        description="ddp: every process keeps the whole model, gradients are averaged (PyTorch DDP). "
        "fsdp2: parameters, gradients and optimizer state are sharded (PyTorch FSDP2 `fully_shard`, GPUs or CPUs; "
        "no checkpoints yet). "
        "deepspeed_zero2: optimizer state and gradients are sharded (DeepSpeed ZeRO stage 2). "
        "deepspeed_zero3: parameters are sharded too (ZeRO stage 3). DeepSpeed needs `pip install deepspeed`.",
    )
    nproc: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Processes `ftsdk train` starts on this machine (under torchrun); `--nproc` overrides it. "
        "Under your own launcher (torchrun, accelerate launch) it is the world size ftsdk expects to see.",
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
    def uses_deepspeed(self) -> bool:
        return self.strategy.startswith("deepspeed")

    @property
    def zero_stage(self) -> int | None:
        """DeepSpeed's ZeRO stage of this strategy (None for ddp and fsdp2)."""
        return {"deepspeed_zero2": 2, "deepspeed_zero3": 3}.get(self.strategy)
