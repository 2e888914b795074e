"""Slurm: an sbatch script whose srun starts torchrun once per node, the rendezvous taken from ``SLURM_*``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import Field

from ftsdk import ConfigError, Launcher, PluginConfig, hookimpl
from ftsdk.plugin.jobs import LaunchRequest
from ftsdk.training.distributed.launch import torchrun_arguments, torchrun_command

#: the variable of the script that holds the launch line srun runs on every node
LAUNCH_VARIABLE = "FTSDK_LAUNCH"
#: the rendezvous host: the job's first node, unless already set
HOST_LINE = ('export FTSDK_RDZV_HOST="${FTSDK_RDZV_HOST:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
             '| head -n 1)}"')


class SlurmConfig(PluginConfig):
    """Options of the slurm launcher (``distributed.launcher_config``).

    ``ftsdk train --launcher slurm RECIPE`` writes an sbatch script for ``distributed.nnodes`` nodes (one task
    each, ``distributed.nproc`` processes per node under torchrun) and, with ``--submit`` or ``submit: true``,
    submits it with ``sbatch``. Outputs and checkpoints must be on storage every node sees.
    """

    submit: bool = Field(False, description="Submit the script with sbatch (also `ftsdk train --submit`).")
    script: str | None = Field(
        None, min_length=1, description="Where the script is written (default: OUTPUT_DIR.sbatch beside the output)."
    )
    job_name: str | None = Field(None, pattern=r"^[\w.-]{1,128}$", description="The job's name (default: ftsdk-OUTPUT).")
    partition: str | None = Field(None, pattern=r"^[\w.,-]{1,128}$", description="#SBATCH --partition.")
    account: str | None = Field(None, pattern=r"^[\w.-]{1,128}$", description="#SBATCH --account.")
    time: str | None = Field(
        None, pattern=r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$", description="#SBATCH --time limit, e.g. 12:00:00 or 1-00:00:00."
    )
    gpus_per_node: int | None = Field(
        None, ge=0, le=64, description="#SBATCH --gpus-per-node (set it to distributed.nproc on GPU nodes)."
    )
    cpus_per_task: int | None = Field(None, ge=1, le=1024, description="#SBATCH --cpus-per-task (the node's task).")
    mem: str | None = Field(None, pattern=r"^\d+[KMGT]?$", description="#SBATCH --mem per node, e.g. 200G.")
    requeue: bool = Field(
        False,
        description="#SBATCH --requeue: a requeued job continues from the newest sealed checkpoint "
        "(SLURM_RESTART_COUNT; needs training.save_steps).",
    )
    directives: list[str] = Field(
        default_factory=list, description="More #SBATCH options, e.g. ['--constraint=a100', '--exclusive']."
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run on the first node before the launch, e.g. ['module load cuda', "
        "'source /shared/venv/bin/activate'].",
    )
    python: str | None = Field(
        None, min_length=1, description="The Python that runs torchrun on the nodes (default: this one, which must "
        "be on shared storage)."
    )
    rdzv_port: int | None = Field(
        None, ge=1024, le=65535,
        description="The rendezvous port on the first node (default: 20000 + job id mod 20000, so jobs sharing a "
        "node do not collide).",
    )


class SlurmLauncher(Launcher):
    """Write an sbatch script (srun + torchrun, c10d rendezvous on the job's first node) and optionally submit it."""

    name = "slurm"
    summary = "Slurm: writes an sbatch script (srun + torchrun, rendezvous from SLURM_*), optionally submits it"
    Config = SlurmConfig

    def script_path(self, request: LaunchRequest) -> Path:
        if self.config.script:
            return Path(self.config.script)
        return request.output_dir.parent / f"{request.output_dir.name}.sbatch"

    def check(self, request: LaunchRequest) -> None:
        if request.distributed.rdzv_endpoint is not None:
            raise ConfigError("distributed.rdzv_endpoint is set, but the slurm launcher takes the rendezvous from "
                              "the job (its first node)", hint="drop rdzv_endpoint (or --rdzv-endpoint)")
        if request.node_rank is not None:
            raise ConfigError("--node-rank is given, but Slurm numbers the nodes itself (SLURM_NODEID)",
                              hint="drop --node-rank")
        for directive in self.config.directives:
            if not directive.startswith("--") or "\n" in directive:
                raise ConfigError(f"slurm directives: {directive!r} is not an sbatch option",
                                  hint="write each as '--name=value', e.g. '--constraint=a100'")
        if (self.submit(request)) and shutil.which("sbatch") is None:
            raise ConfigError("cannot submit: sbatch is not found on this machine (not a Slurm login node?)",
                              hint="run without --submit to write the script only, and submit it where sbatch is")

    def submit(self, request: LaunchRequest) -> bool:
        return request.submit or self.config.submit

    def launch_line(self, request: LaunchRequest) -> str:
        """The shell command srun runs once per node: torchrun with the node count, id and host from Slurm."""
        port = str(self.config.rdzv_port) if self.config.rdzv_port else "$((20000 + SLURM_JOB_ID % 20000))"
        options = torchrun_arguments(request, nnodes="@NNODES@", node_rank=None, endpoint="@HOST@:@PORT@",
                                     rdzv_id="ftsdk-@JOB@")
        command = shlex.join(torchrun_command(request.argv, options, python=self.config.python or sys.executable))
        shell = {"@NNODES@": '"$SLURM_NNODES"', "@HOST@": '"$FTSDK_RDZV_HOST"', "@PORT@": f'"{port}"',
                 "@JOB@": '"$SLURM_JOB_ID"'}
        for placeholder, value in shell.items():  # "@" is shell-safe: shlex left these options unquoted
            command = command.replace(placeholder, value)
        return f"exec {command}"

    def render(self, request: LaunchRequest) -> str:
        """The sbatch script."""
        config, nodes = self.config, request.distributed.nnodes
        name = config.job_name or f"ftsdk-{request.output_dir.name}"[:128]
        log = request.output_dir.parent / f"{request.output_dir.name}.slurm-%j.out"
        directives = [f"--job-name={name}", f"--nodes={nodes}", "--ntasks-per-node=1",
                      f"--chdir={Path.cwd()}", f"--output={log}"]
        for option, value in (("partition", config.partition), ("account", config.account), ("time", config.time),
                              ("gpus-per-node", config.gpus_per_node), ("cpus-per-task", config.cpus_per_task),
                              ("mem", config.mem)):
            if value is not None:
                directives.append(f"--{option}={value}")
        if config.requeue:
            directives.append("--requeue")
        directives += config.directives
        env = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in request.env.items())
        lines = [
            "#!/bin/bash",
            *(f"#SBATCH {shlex.quote(d) if ' ' in d else d}" for d in directives),
            f"# written by `ftsdk train --launcher slurm`; submit with: sbatch {self.script_path(request)}",
            "set -euo pipefail",
            *config.setup,
            env,
            HOST_LINE,
            "# srun runs the launch line once per node; torchrun there starts "
            f"{request.nproc} process(es) and joins the rendezvous on the first node",
            f"{LAUNCH_VARIABLE}={shlex.quote(self.launch_line(request))}",
            f'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c "${LAUNCH_VARIABLE}"',
        ]
        return "\n".join(line for line in lines if line) + "\n"

    def launch(self, request: LaunchRequest) -> int:
        path = self.script_path(request)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text(self.render(request), encoding="utf-8")
        partial.chmod(0o755)
        os.replace(partial, path)  # never a half-written script at the path
        if not self.submit(request):
            print(f"wrote {path}; submit it with: sbatch {path}")
            return 0
        result = subprocess.run(["sbatch", str(path)], check=False, capture_output=True, text=True)
        print((result.stdout + result.stderr).strip())
        return result.returncode


@hookimpl
def register_launchers(register):
    register(SlurmLauncher)
