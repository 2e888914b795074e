"""Starting the processes of a run: what a launcher plugin receives, and torchrun's command line.

``ftsdk train`` with ``--nproc``/``--nnodes``/``--launcher`` (or a ``distributed:`` section that asks for them)
hands the same ``ftsdk train`` command to a launcher plugin (:class:`ftsdk.plugin.kinds.Launcher`), which starts it as
every process of the run; those processes find themselves under the launcher and train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import LaunchRequest
from ftsdk.training.distributed.config import DistributedConfig

#: carries the command line's distributed settings (``--nproc``, ``--nnodes``) to the processes a launcher starts
OVERRIDES_VARIABLE = "FTSDK_DISTRIBUTED"
#: the ``distributed`` fields the command line sets
OVERRIDABLE = ("nproc", "nnodes", "launcher", "rdzv_endpoint", "max_restarts")


def overrides_from(values: Mapping[str, Any | None], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The distributed settings given on the command line, or else carried by the launcher's environment."""
    given = {key: value for key, value in values.items() if key in OVERRIDABLE and value is not None}
    if given:
        return given
    carried = (os.environ if env is None else env).get(OVERRIDES_VARIABLE)
    return json.loads(carried) if carried else {}


def with_overrides(config: DistributedConfig | None, overrides: Mapping[str, Any]) -> DistributedConfig | None:
    """``config`` with the command line's settings, validated (one ConfigError naming the option)."""
    if not overrides:
        return config
    from ftsdk.plugin.settings import validate_config

    current = {name: getattr(config, name) for name in DistributedConfig.model_fields} if config else {}
    return validate_config(DistributedConfig, {**current, **overrides}, where="distributed (command line)")


def torchrun_arguments(request: LaunchRequest, *, nnodes: str, node_rank: str | None, endpoint: str | None,
                       rdzv_id: str, extra: Sequence[str] = ()) -> list[str]:
    """torchrun's own options for ``request`` (node count, rank and endpoint may be shell variables).

    One node without an endpoint uses ``--standalone`` (a free local port, so runs side by side do not collide);
    otherwise the c10d rendezvous at ``endpoint``, the same command on every node.
    """
    config = request.distributed
    options = [f"--nproc-per-node={request.nproc}", f"--max-restarts={config.max_restarts}"]
    if endpoint is None:
        options.insert(0, "--standalone")
    else:
        options = [f"--nnodes={nnodes}", *([f"--node-rank={node_rank}"] if node_rank is not None else []),
                   "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}", *options]
    return [*options, *extra]


def torchrun_command(argv: Sequence[str], options: Sequence[str], python: str | None = None) -> list[str]:
    """The command that runs ``ftsdk ARGV`` under torchrun (``torch.distributed.run``) with its ``options``.

    torchrun parses abbreviations of its own options even among the script's arguments: an argument such as
    ``--nproc`` (a prefix of ``--nproc-per-node``) must not be forwarded (the environment carries it).
    """
    return [python or sys.executable, "-m", "torch.distributed.run", *options, "-m", "ftsdk.cli", *argv]


def run_command(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command`` with extra ``env`` and wait; return its exit status."""
    return subprocess.run(list(command), check=False, env={**os.environ, **env}).returncode


def launch(request: LaunchRequest) -> int:
    """Start ``request`` with its launcher plugin (``distributed.launcher``); return the exit status."""
    from ftsdk import plugins

    config = request.distributed
    launcher = plugins.create("launcher", config.launcher, config.launcher_config)
    launcher.check(request)  # type: ignore[attr-defined]
    return launcher.launch(request)  # type: ignore[attr-defined]


def check_multi_node(request: LaunchRequest) -> None:
    """Refuse several nodes without a rendezvous endpoint (each node would train alone)."""
    if request.distributed.nnodes > 1 and request.distributed.rdzv_endpoint is None:
        raise ConfigError(
            f"distributed.nnodes is {request.distributed.nnodes} but no rendezvous endpoint is given: the nodes "
            "could not find each other",
            hint="pass --rdzv-endpoint HOST:PORT (a node every node reaches, the same on all), or set "
            "distributed.rdzv_endpoint",
        )
