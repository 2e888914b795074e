"""torchrun: the processes of this node, joined to the other nodes through torchrun's c10d rendezvous."""

from __future__ import annotations

from pydantic import Field

from ftsdk import Launcher, PluginConfig, hookimpl
from ftsdk.plugin.jobs import LaunchRequest
from ftsdk.training.distributed.launch import check_multi_node, run_command, torchrun_arguments, torchrun_command


class TorchrunConfig(PluginConfig):
    """Options of the torchrun launcher (``distributed.launcher_config``).

    Run the same ``ftsdk train`` command on every node: each starts ``distributed.nproc`` processes and joins the
    c10d rendezvous at ``distributed.rdzv_endpoint``; one node without an endpoint runs standalone.
    """

    rdzv_timeout: int = Field(
        900, ge=10, le=86_400,
        description="Seconds a node waits at the rendezvous for the others (torchrun's join_timeout).",
    )
    monitor_interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between torchrun's checks of its processes (how fast it sees a death)."
    )


class TorchrunLauncher(Launcher):
    """Start this node's processes with torchrun (``python -m torch.distributed.run``) and wait for them."""

    name = "torchrun"
    summary = "torchrun: this node's processes, c10d rendezvous across nodes, elastic restarts"
    Config = TorchrunConfig

    def check(self, request: LaunchRequest) -> None:
        check_multi_node(request)

    def command(self, request: LaunchRequest) -> list[str]:
        """The torchrun command line this node runs."""
        config = request.distributed
        extra = [f"--rdzv-conf=join_timeout={self.config.rdzv_timeout}",
                 f"--monitor-interval={self.config.monitor_interval}"]
        options = torchrun_arguments(
            request, nnodes=str(config.nnodes), endpoint=config.rdzv_endpoint, rdzv_id=request.rdzv_id,
            node_rank=None if request.node_rank is None else str(request.node_rank),
            extra=extra if config.rdzv_endpoint else extra[1:],
        )
        return torchrun_command(request.argv, options)

    def launch(self, request: LaunchRequest) -> int:
        return run_command(self.command(request), request.env)


@hookimpl
def register_launchers(register):
    register(TorchrunLauncher)
