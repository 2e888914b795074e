"""Ray Train: the same ``ftsdk train`` in every worker of Ray Train's ``TorchTrainer`` (which forms the group)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from ftsdk import ConfigError, Launcher, PluginConfig, hookimpl
from ftsdk.plugin.jobs import LaunchRequest

#: set in Ray's workers, so ftsdk names the launcher that started them
LAUNCHER_VARIABLE = "FTSDK_LAUNCHER"


class RayConfig(PluginConfig):
    """Options of the ray launcher (``distributed.launcher_config``).

    Ray Train starts ``distributed.nnodes x distributed.nproc`` workers wherever the cluster has room, sets up
    torch.distributed among them (gloo on CPUs, nccl on GPUs) and each runs the same ``ftsdk train``. Outputs and
    checkpoints must be on storage every node sees.
    """

    address: str | None = Field(
        None,
        min_length=1,
        description="The Ray cluster: none starts a local one on this machine; 'auto' joins the cluster this machine "
        "belongs to; 'ray://HEAD:10001' connects through Ray Client.",
    )
    use_gpu: bool = Field(False, description="Give each worker one GPU (then nccl).")
    cpus_per_worker: float = Field(1.0, gt=0, le=1024, description="CPUs Ray reserves for each worker.")
    storage_path: str | None = Field(
        None, min_length=1,
        description="Ray Train's run folder (shared storage or a URI on several nodes; default: ~/ray_results).",
    )


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: run ``ftsdk ARGV`` in this process, inside the group Ray Train formed."""
    os.environ.update(config["env"])
    os.environ[LAUNCHER_VARIABLE] = "ray"
    os.chdir(config["cwd"])
    from ftsdk.cli import main

    status = main(config["argv"])
    if status:
        raise RuntimeError(f"ftsdk {' '.join(config['argv'])} exited with status {status}")


class RayLauncher(Launcher):
    """Run the training as a Ray Train ``TorchTrainer`` job on a local or existing Ray cluster."""

    name = "ray"
    summary = "Ray Train: TorchTrainer workers on a local or existing Ray cluster run the training"
    Config = RayConfig
    requires = ("ray",)
    install_hint = "pip install 'ftsdk[ray]' (Ray Train; no CUDA torch is pulled)"

    def check(self, request: LaunchRequest) -> None:
        config = request.distributed
        if config.rdzv_endpoint is not None or request.node_rank is not None:
            raise ConfigError("the ray launcher runs once for the whole cluster; Ray forms the process group itself",
                              hint="drop --rdzv-endpoint and --node-rank (run the command once, on the head node)")
        if config.max_restarts:
            raise ConfigError("distributed.max_restarts is torchrun's elastic restart; the ray launcher does not "
                              "restart workers", hint="set max_restarts: 0, or use the torchrun launcher")

    def launch(self, request: LaunchRequest) -> int:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        config = request.distributed
        workers = config.nnodes * request.nproc
        started = not ray.is_initialized()
        if started:
            local = {"num_cpus": math.ceil(workers * self.config.cpus_per_worker)} if self.config.address is None else {}
            ray.init(address=self.config.address, include_dashboard=False, **local)
        backend = config.backend if config.backend != "auto" else ("nccl" if self.config.use_gpu else "gloo")
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"argv": request.argv, "env": request.env, "cwd": str(Path.cwd())},
            torch_config=TorchConfig(backend=backend),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=self.config.use_gpu,
                                         resources_per_worker={"CPU": self.config.cpus_per_worker}),
            run_config=RunConfig(name=request.rdzv_id, storage_path=self.config.storage_path),
        )
        try:
            trainer.fit()
        except Exception as error:  # Ray wraps the workers' failures (TrainingFailedError)
            print(f"ray launcher: the training failed: {error}")
            return 1
        finally:
            if started:
                ray.shutdown()  # the connection (and the local instance this launch started)
        return 0


@hookimpl
def register_launchers(register):
    register(RayLauncher)
